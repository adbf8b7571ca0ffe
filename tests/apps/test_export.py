"""sit_vqa.apps.export: a standalone model that plain transformers loads in a fresh process and that generates
what the demo API generates from the checkpoint; the trained EOS in its generation config; the model card."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
from sit_vqa.apps.demo import VqaDemo
from sit_vqa.modeling.generation import GenerationSettings
from sit_vqa.apps.export import ExportError, export_model, main

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted((REPO / "data" / "sample" / "val2014").glob("*.jpg"))[:2]
QUESTIONS = ["What color is the shape?", "How many shapes are there?"]
MAX_NEW_TOKENS = 20

# Only transformers and PIL: what a user of the exported directory has.
PLAIN_TRANSFORMERS = """
import json, sys
from PIL import Image
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor
directory, requests = sys.argv[1], json.loads(sys.argv[2])
model = InstructBlipForConditionalGeneration.from_pretrained(directory).eval()
processor = InstructBlipProcessor.from_pretrained(directory)
texts = []
for image_path, prompt in requests:
    inputs = processor(images=Image.open(image_path).convert("RGB"), text=prompt, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=%d)  # no eos argument: the generation config must hold it
    new_ids = ids[:, inputs["input_ids"].shape[1]:]
    texts.append(processor.batch_decode(new_ids, skip_special_tokens=True)[0].strip())
print(json.dumps({"texts": texts, "eos": model.generation_config.eos_token_id,
                  "tokenizer_eos": processor.tokenizer.eos_token_id,
                  "text_config_eos": model.config.text_config.eos_token_id}))
""" % MAX_NEW_TOKENS


@pytest.fixture(scope="module")
def run_with_wrong_eos(quickstart_run, tmp_path_factory):
    """The quickstart run with its base model's LM configs naming another EOS, as the hub's Vicuna-7B does."""
    run = tmp_path_factory.mktemp("wrong_eos") / "run"
    shutil.copytree(quickstart_run, run, ignore=shutil.ignore_patterns("runs"))
    config_path = run / "final" / "base_model" / "config.json"
    config = json.loads(config_path.read_text())
    config["text_config"]["eos_token_id"] = 2  # <unk> of the tiny tokenizer; its </s> is 1
    config_path.write_text(json.dumps(config))
    generation_path = run / "final" / "base_model" / "generation_config.json"
    generation_path.write_text(json.dumps({**json.loads(generation_path.read_text()), "eos_token_id": 2}))
    return run


def test_export_loads_with_plain_transformers_and_generates_as_the_api(run_with_wrong_eos, tmp_path):
    out = export_model(run_with_wrong_eos, tmp_path / "exported")
    demo = VqaDemo.load(run_with_wrong_eos)
    replies = demo.ask_many(list(zip(IMAGES, QUESTIONS)), options=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))
    requests = [[str(image), reply.prompt] for image, reply in zip(IMAGES, replies)]
    done = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(out), json.dumps(requests)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["texts"] == [reply.raw for reply in replies]
    assert result["eos"] == result["tokenizer_eos"] == result["text_config_eos"] == 1
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 1
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # safetensors only
    exported = VqaDemo.load(out)  # the demo reads the export too, with the run's training mode
    assert exported.trained_mode == "sit"
    assert exported.ask(IMAGES[0], QUESTIONS[0], options=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)) == replies[0]


def test_model_card_holds_recipe_prompt_and_scores(quickstart_run, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    evaluation = tmp_path / "eval"
    assert evaluate.main(["--config", "quickstart.yaml", "--checkpoint", str(quickstart_run), "--limit", "3",
                          "--max-new-tokens", "8", "--out", str(evaluation), "--no-progress"]) == 0
    report = json.loads((evaluation / "report.json").read_text())
    assert main(["--checkpoint", str(quickstart_run), "--out", str(tmp_path / "exported"),
                 "--report", str(evaluation / "report.json")]) == 0
    card = (tmp_path / "exported" / "README.md").read_text()
    assert "tiny offline InstructBLIP" in card and "mode: `sit`" in card
    assert "First describe the image, then answer the input question based on the image.\nQuestion: <question>" in card
    assert f"| overall | {report['overall']:.2f} |" in card and "on 3 val questions" in card
    # the length as run (max_steps 6 cut the config's num_train_epochs 8 short), not the configured epochs
    epoch = json.loads((quickstart_run / "final" / "sit_vqa_checkpoint.json").read_text())["epoch"]
    assert 0 < epoch < 8
    assert f"6 optimizer steps ({epoch:.2f} epochs of the training data)" in card and " 8 epochs" not in card


def test_export_refuses_to_overwrite_and_bad_checkpoints(quickstart_run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_model(quickstart_run, tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "keep me"
    assert main(["--checkpoint", str(tmp_path / "taken"), "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "new").exists()


def test_export_onto_an_existing_file_exits_2_with_a_message(quickstart_run, tmp_path):
    taken = tmp_path / "model.bin"
    taken.write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "sit_vqa.apps.export", "--checkpoint", str(quickstart_run),
                             "--out", str(taken)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "is a file" in result.stderr and "Traceback" not in result.stderr
    assert taken.read_text() == "keep me"


def test_export_with_a_text_set_report_exits_2_naming_the_set(quickstart_run, tmp_path, monkeypatch):
    """The card shows VQAv2 accuracy; a text-set report used to end in KeyError: 'perAnswerType'."""
    monkeypatch.chdir(REPO)
    evaluation = tmp_path / "text_eval"
    assert evaluate.main(["--config", "text_sit.yaml", "--zero-shot", "--task", "text", "--limit", "2",
                          "--max-new-tokens", "4", "--out", str(evaluation), "--no-progress"]) == 0
    assert json.loads((evaluation / "report.json").read_text())["task"] == "text"
    result = subprocess.run([sys.executable, "-m", "sit_vqa.apps.export", "--checkpoint", str(quickstart_run),
                             "--out", str(tmp_path / "exported"), "--report", str(evaluation)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert f"--report {evaluation} is an evaluation on the text set" in result.stderr, result.stderr
    assert "--task vqa" in result.stderr and not (tmp_path / "exported").exists()


def test_export_refuses_the_report_of_another_checkpoint(quickstart_run, tmp_path, capsys, monkeypatch):
    """The card would show that evaluation's score as this model's own."""
    monkeypatch.chdir(REPO)
    zero_shot = tmp_path / "zero_shot"
    assert evaluate.main(["--config", "quickstart.yaml", "--zero-shot", "--limit", "2", "--max-new-tokens", "2",
                          "--out", str(zero_shot), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(quickstart_run), "--out", str(tmp_path / "exported"),
                 "--report", str(zero_shot)]) == 2
    error = capsys.readouterr().err
    assert f"--report {zero_shot} is an evaluation of the base model (zero-shot), not of {quickstart_run / 'final'}" in error
    assert not (tmp_path / "exported").exists()
