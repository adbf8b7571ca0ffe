"""evaluate.py --task on the bundled samples: GQA, xGQA, OK-VQA, XQuAD and the held-out text SIT records.

Each set runs end to end (tiny models, offline) and its report must equal the set's own scorer run on the
results files it wrote. The tiny models answer nothing right, so each set's scoring is also run on
hand-made generations with hand-worked numbers. Bad input exits 2 with a message naming the file.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluate
from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.config import load_config
from sit_vqa.data.prompts import BASELINE_TASK, parse_sit_output
from sit_vqa.evaluation.options import EvalOptions, TaskOptions
from sit_vqa.evaluation.sets import (
    TRANSLATE_QUESTION_PREFIX,
    GqaSet,
    XgqaSet,
    XquadSet,
    translation_of,
)
from sit_vqa.evaluation.text import TextSet, text_answer
from sit_vqa.metrics import gqa as gqa_metric
from sit_vqa.metrics.gqa import score_gqa_files
from sit_vqa.metrics.squad import score_squad_files
from sit_vqa.metrics.text import chrf, rouge_l
from sit_vqa.metrics.vqa import score_files as score_vqa_files
from sit_vqa.modeling.loading import build_model
from sit_vqa.evaluation.reports import write_report_files

REPO = Path(__file__).resolve().parents[2]
# the small configs the tests keep (the shipped demo configs train larger models on generated data)
IMAGE_CONFIG = str(REPO / "tests" / "configs" / "bundled_sample.yaml")
TEXT_CONFIG = str(REPO / "tests" / "configs" / "text_lora.yaml")
DATA = REPO / "data"
GQA = DATA / "gqa_sample" / "testdev_balanced_questions.json"
GQA_IMAGES = DATA / "gqa_sample" / "images"
XGQA = DATA / "xgqa_sample"
XQUAD = DATA / "xquad_sample"
OKVQA = DATA / "okvqa_sample"
REPORT_KEYS = {"task", "metric", "score_name", "overall", "columns", "num_questions", "question_set_sha256", "settings"}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name data/... relative to the repository


def zero_shot(config_path: str) -> tuple:
    """(trained settings, config) of a config's untrained model: what a set's records are made with."""
    config = load_config(config_path, data_roles=())
    return ckpt.TrainedSettings.zero_shot(config.model, config.data), config


def seeded(config_path: str, seed: int = 0):
    """A config whose subset_seed is `seed` (what a set draws its --limit sample with)."""
    return load_config(config_path, ["--subset_seed", str(seed)], data_roles=())


def run_main(config: str, *argv: str) -> int:
    return evaluate.main(["--config", config, "--no-progress", *argv])


def read_outputs(out: Path, results: str = "results.json"):
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return json.loads((out / results).read_text()), predictions, json.loads((out / "report.json").read_text())


def gqa_zero_shot(out: Path, *argv: str) -> int:
    return run_main(IMAGE_CONFIG, "--zero-shot", "--task", "gqa", "--task-data", str(GQA), "--image-dir",
                    str(GQA_IMAGES), "--out", str(out), "--max-new-tokens", "4", *argv)


# ------------------------------------------------------------------------------------------------ GQA


def test_gqa_end_to_end_equals_the_official_scorer_on_results_json(tmp_path, capsys):
    out = tmp_path / "gqa"
    assert gqa_zero_shot(out, "--limit", "10") == 0
    assert {p.name for p in out.iterdir()} == {"results.json", "predictions.jsonl", "report.json", "report.md"}
    results, predictions, report = read_outputs(out)
    assert REPORT_KEYS <= set(report) and report["task"] == "gqa" and report["num_questions"] == 10
    assert [r["questionId"] for r in results] == [p["question_id"] for p in predictions]
    for prediction, result in zip(predictions, results):
        assert prediction["prompt"].startswith(BASELINE_TASK)  # zero-shot: the baseline instruction
        assert prediction["answer"] == result["prediction"] == parse_sit_output(prediction["generation"]).answer
    official = score_gqa_files(GQA, out / "results.json", allow_missing=True)
    for key in ("accuracy", "binary", "open", "accuracyPerStructuralType", "accuracyPerSemanticType", "questions"):
        assert report[key] == official[key], key
    assert report["overall"] == official["accuracy"] and report["metric"] == "gqa-eval.py-exact"
    assert report["matching"] == gqa_metric.EXACT
    assert "| Structural type | Questions | Accuracy |" in (out / "report.md").read_text()
    assert f"GQA accuracy {report['overall']:.2f} on 10 questions" in capsys.readouterr().out


def _gqa_set(**options) -> GqaSet:
    task = TaskOptions(task="gqa", task_data=str(GQA), image_dir=str(GQA_IMAGES), **options)
    return GqaSet(task, EvalOptions(), seeded(IMAGE_CONFIG))


def test_gqa_scoring_of_hand_made_outputs_matches_the_scorer_on_the_written_file(tmp_path):
    """Right answers, a capitalised one with a period ("Yes."), a wrong one: exact match scores 2 of 4 unless
    the stated clean-up is asked for (then 3 of 4); the written results.json scores the same in the official
    scorer."""
    for normalize, expected in ((False, 50.0), (True, 75.0)):
        evaluation_set = _gqa_set(gqa_normalize=normalize)
        records = evaluation_set.records("sit", *zero_shot(IMAGE_CONFIG))[:4]
        answers = [r["answer"] for r in records]
        generations = [f"Description: a scene.\nAnswer: {answers[0]}", answers[1],
                       f"Answer: {answers[2].capitalize()}.", "Answer: purple elephant"]
        scored = evaluation_set.score(records, generations)
        assert scored.numbers["accuracy"] == expected
        write_report_files(tmp_path, scored.results, scored.predictions, {"task": "gqa"}, "")
        official = score_gqa_files(GQA, tmp_path / "results.json", normalize=normalize, allow_missing=True)
        assert official["accuracy"] == expected
        assert [p["correct"] for p in scored.predictions] == [1.0, 1.0, float(normalize), 0.0]
        assert scored.numbers["matching"] == (gqa_metric.NORMALIZED if normalize else gqa_metric.EXACT)


# ----------------------------------------------------------------------------------------------- xGQA


def test_xgqa_translate_first_end_to_end_per_language(tmp_path, capsys):
    out = tmp_path / "xgqa"
    assert run_main(IMAGE_CONFIG, "--zero-shot", "--task", "xgqa", "--task-data", str(XGQA), "--image-dir",
                    str(GQA_IMAGES), "--languages", "de", "zh", "--translate-first", "--limit", "6",
                    "--out", str(out), "--max-new-tokens", "6") == 0
    assert {p.name for p in out.iterdir()} == {"results_de.json", "results_zh.json", "predictions.jsonl",
                                               "report.json", "report.md"}
    _, predictions, report = read_outputs(out, "results_de.json")
    assert report["task"] == "xgqa" and report["num_questions"] == 12 and report["mean_over"] == ["de", "zh"]
    assert all(p["prompt"].startswith(TRANSLATE_QUESTION_PREFIX + "answer the input question") for p in predictions)
    for lang in ("de", "zh"):
        official = score_gqa_files(XGQA / f"testdev_balanced_questions_{lang}.json", out / f"results_{lang}.json",
                                   allow_missing=True, english=XGQA / "testdev_balanced_questions_en.json")
        assert report["perLanguage"][lang]["accuracy"] == official["accuracy"] == report["columns"][lang]
        assert report["perLanguage"][lang]["questions"] == 6 == official["questions"]
    # the same seeded questions in every language
    assert sorted(p["question_id"] for p in predictions if p["language"] == "de") == \
        sorted(p["question_id"] for p in predictions if p["language"] == "zh")
    mean = (report["perLanguage"]["de"]["accuracy"] + report["perLanguage"]["zh"]["accuracy"]) / 2
    assert report["overall"] == mean
    printed = capsys.readouterr().out
    assert "| Language | Questions | Accuracy |" in printed and "| **mean** (de, zh) |" in printed


def test_translate_first_answer_is_read_after_the_translation():
    text = ("Translation: What colour is the answer: circle?\nDescription: A red circle on white.\n"
            "Answer: red\nQuestion: Is it big?\nAnswer: yes")
    parsed = parse_sit_output(text)
    assert parsed.answer == "red" and parsed.description == "A red circle on white."
    assert translation_of(text) == "What colour is the answer: circle?"
    assert translation_of("Translation: Is it red?\nAnswer: no") == "Is it red?"
    assert translation_of("Answer: no") is None


def test_xgqa_scores_hand_made_translations_against_the_english_questions():
    task = TaskOptions(task="xgqa", task_data=str(XGQA), image_dir=str(GQA_IMAGES), languages=["de"],
                       translate_first=True)
    evaluation_set = XgqaSet(task, EvalOptions(limit=3), seeded(IMAGE_CONFIG))
    records = evaluation_set.records("sit", *zero_shot(IMAGE_CONFIG))
    assert records[0]["instruction"].startswith(
        "First translate the question into English, then describe the image, then answer the input question")
    english = [evaluation_set.english_questions[r["question_id"]] for r in records]
    generations = [f"Translation: {english[0]}\nDescription: shapes.\nAnswer: {records[0]['answer']}",
                   f"Translation: {english[1]}\nAnswer: {records[1]['answer']}",
                   f"Answer: {records[2]['answer']}"]  # right answer, no translation
    scored = evaluation_set.score(records, generations)
    german = scored.numbers["perLanguage"]["de"]
    assert german["accuracy"] == 100.0
    assert german["translation_marker_rate"] == round(2 / 3, 4)
    assert german["translation_chrf"] == chrf([english[0], english[1], ""], english)
    assert [p["translation"] for p in scored.predictions] == [english[0], english[1], None]


# ---------------------------------------------------------------------------------------------- OK-VQA


def test_okvqa_end_to_end_with_the_official_vqa_accuracy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output goes under ./runs/eval, beside no VQAv2 run's
    out = tmp_path / "runs" / "eval" / "zero-shot-bundled_sample-okvqa"
    assert evaluate.main(["--config", str(IMAGE_CONFIG), "--zero-shot", "--no-progress",
                          "--task", "okvqa", "--task-data", str(OKVQA), "--max-new-tokens", "4",
                          "--eval_captions", str(DATA / "sample" / "captions_val2014.json"),
                          "--eval_image_dir", str(DATA / "sample" / "val2014")]) == 0
    results, predictions, report = read_outputs(out)
    assert report["task"] == "vqa" and report["num_questions"] == 20  # every OK-VQA sample question
    assert len(results) == len(predictions) == 20
    official = score_vqa_files(OKVQA / "OpenEnded_mscoco_val2014_questions.json",
                               OKVQA / "mscoco_val2014_annotations.json", out / "results.json")
    for key in ("overall", "perAnswerType", "perQuestionType"):
        assert report[key] == official[key], key


# ---------------------------------------------------------------------------------------------- XQuAD


def test_xquad_end_to_end_equals_the_official_squad_scorer(tmp_path, capsys):
    out = tmp_path / "xquad"
    assert run_main(TEXT_CONFIG, "--zero-shot", "--task", "xquad", "--task-data", str(XQUAD),
                    "--translate-first", "--out", str(out), "--max-new-tokens", "8") == 0
    _, predictions, report = read_outputs(out, "results_de.json")
    assert report["task"] == "xquad" and report["mean_over"] == ["de", "zh"] and report["num_questions"] == 33
    assert all(p["prompt"].startswith("First translate the input into English, then answer the question about "
                                      "the text.\nInput: ") for p in predictions)
    for lang in ("en", "de", "zh"):
        official = score_squad_files(XQUAD / f"xquad.{lang}.json", out / f"results_{lang}.json",
                                     english=XQUAD / "xquad.en.json")
        assert report["perLanguage"][lang]["exact_match"] == official["exact_match"] == report["columns"][f"{lang} EM"]
        assert report["perLanguage"][lang]["f1"] == official["f1"]
    assert report["overall"] == (report["perLanguage"]["de"]["f1"] + report["perLanguage"]["zh"]["f1"]) / 2
    assert "| **mean** (de, zh) |" in capsys.readouterr().out


def test_xquad_scores_hand_made_outputs():
    """German: an exact answer after the translation, one with an extra word (EM 0, F1 2/3), a missing one."""
    task = TaskOptions(task="xquad", task_data=str(XQUAD), languages=["de"], translate_first=True)
    evaluation_set = XquadSet(task, EvalOptions(limit=3), seeded(TEXT_CONFIG))
    records = evaluation_set.records("translate", *zero_shot(TEXT_CONFIG))
    assert "\nInput: " in records[0]["instruction"] and "\nQuestion: " in records[0]["instruction"]
    gold = [r["answers"][0] for r in records]
    generations = [f"Translation: {records[0]['english_input']}\nAnswer: {gold[0]}",
                   f"Translation: something\nAnswer: sehr {gold[1]}", "ich weiß nicht"]
    german = evaluation_set.score(records, generations).numbers["perLanguage"]["de"]
    assert german["exact_match"] == pytest.approx(100 / 3)
    assert german["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert german["sequence_rate"] == pytest.approx(200 / 3)


# ----------------------------------------------------------------------------------------------- text


def write_text_checkpoint(directory: Path, *overrides: str) -> Path:
    """A LoRA checkpoint of text_sit.yaml's tiny causal LM as train.py writes one (adapters moved off zero)."""
    config = load_config(TEXT_CONFIG, list(overrides))
    model, tokenizer = build_model(config.model, quiet=True)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)
    ckpt.write_checkpoint(directory, model, tokenizer,
                          ckpt.CheckpointManifest(model_type="causal_lm", config=config.to_dict()), global_step=3)
    return directory


def test_text_checkpoint_end_to_end_on_the_held_out_records(tmp_path):
    write_text_checkpoint(tmp_path / "text" / "final", "--text_mode", "translate")
    out = tmp_path / "eval"
    # no --task: a causal_lm config evaluates its held-out eval_text_data
    assert run_main(TEXT_CONFIG, "--checkpoint", str(tmp_path / "text"), "--out", str(out),
                    "--max-new-tokens", "8") == 0
    results, predictions, report = read_outputs(out)
    assert report["task"] == "text" and report["num_questions"] == 8
    assert report["settings"]["prompt"] == "translate"  # as the checkpoint trained, though the config says repeat
    held_out = json.loads((DATA / "alpaca_sample" / "alpaca_eval_en.json").read_text())
    references = [record["output"] for record in held_out]
    german = json.loads((DATA / "alpaca_sample" / "alpaca_eval_de.json").read_text())
    assert predictions[0]["prompt"].endswith("Input: " + german[0]["input"])
    answers = [result["answer"] for result in results]
    assert answers == [p["answer"] for p in predictions]
    assert report["answer_rouge_l"] == rouge_l(answers, references) == report["overall"]
    assert report["answer_chrf"] == chrf(answers, references)
    assert report["records_with_input"] == 6 and report["first_step_metric"] == "chrF against the English input"
    assert (out / "report.md").read_text().startswith("# text SIT: answer ROUGE-L: text")


def _text_set(mode: str) -> TextSet:
    config = load_config(TEXT_CONFIG, ["--text_mode", mode], data_roles=("eval",))
    return TextSet(TaskOptions(task="text"), EvalOptions(), config)


def test_text_scores_hand_made_repeat_and_translate_outputs():
    repeat = _text_set("repeat")
    records = repeat.records("repeat", *zero_shot(TEXT_CONFIG))
    with_input = [i for i, r in enumerate(records) if r["input"]]
    generations = [r["reference"] for r in records]  # no-input records: the bare answer
    for rank, i in enumerate(with_input):  # 3 exact copies, 1 wrong copy, 2 without the sequence
        record = records[i]
        copy = record["input"] if rank < 3 else "something else"
        generations[i] = (f"Input: {copy}\nAnswer: {record['reference']}" if rank < 4 else record["reference"])
    numbers = repeat.score(records, generations).numbers
    assert numbers["sequence_rate"] == pytest.approx(100 * 4 / 6)
    assert numbers["first_step_fidelity"] == pytest.approx(100 * 3 / 6)
    assert numbers["answer_rouge_l"] == pytest.approx(100.0)  # multi-line answers are kept whole
    two_lines = "1. Practise daily.\n2. Talk a lot."
    assert text_answer(f"Input: x\nAnswer: {two_lines}", {"input": "x"}, "Input:") == two_lines
    assert text_answer(two_lines, {"input": "x"}, "Input:") == two_lines  # no marker: the whole output

    translate = _text_set("translate")
    records = translate.records("translate", *zero_shot(TEXT_CONFIG))
    assert records[0]["instruction"].startswith("First translate the input into English, then ")
    generations = [f"Translation: {r['input']}\nAnswer: {r['reference']}" for r in records]
    numbers = translate.score(records, generations).numbers
    assert numbers["sequence_rate"] == 100.0 and numbers["first_step_fidelity"] == pytest.approx(100.0)

    plain_set = _text_set("plain")
    records = plain_set.records("plain", *zero_shot(TEXT_CONFIG))
    assert "\n" in records[0]["instruction"] and not records[0]["instruction"].startswith("First")
    plain = plain_set.score(records, [r["reference"] for r in records]).numbers
    assert plain["sequence_rate"] is None and plain["answer_chrf"] == pytest.approx(100.0)


# -------------------------------------------------------------------------------------------- compare


def test_compare_runs_on_one_set_and_refuse_other_sets_and_metrics(tmp_path, capsys):
    assert gqa_zero_shot(tmp_path / "base", "--limit", "6") == 0
    assert gqa_zero_shot(tmp_path / "sit", "--limit", "6", "--prompt", "sit") == 0
    assert gqa_zero_shot(tmp_path / "norm", "--limit", "6", "--gqa-normalize") == 0
    assert run_main(IMAGE_CONFIG, "--zero-shot", "--task", "xgqa", "--task-data", str(XGQA), "--image-dir",
                    str(GQA_IMAGES), "--languages", "en", "--limit", "6", "--out", str(tmp_path / "xgqa"),
                    "--max-new-tokens", "2") == 0
    capsys.readouterr()
    assert evaluate.main(["--compare", str(tmp_path / "base"), str(tmp_path / "sit"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("GQA accuracy (gqa-eval.py-exact, 6 questions")
    assert "| Run | Overall | binary | open |" in printed
    comparison = json.loads((tmp_path / "compare.json").read_text())
    assert comparison["task"] == "gqa" and comparison["rows"][1]["name"] == "sit"
    assert evaluate.main(["--compare", str(tmp_path / "base"), str(tmp_path / "xgqa")]) == 2
    assert "task xgqa" in capsys.readouterr().err
    assert evaluate.main(["--compare", str(tmp_path / "base"), str(tmp_path / "norm")]) == 2
    assert "same metric" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """An xGQA folder whose German file lost an id, an XQuAD folder with a foreign id (de) and a repeated id (zh)."""
    root = tmp_path_factory.mktemp("bad")
    xgqa = shutil.copytree(XGQA, root / "xgqa")
    german = json.loads((xgqa / "testdev_balanced_questions_de.json").read_text())
    german["99999999"] = german.pop(next(iter(german)))
    (xgqa / "testdev_balanced_questions_de.json").write_text(json.dumps(german))
    xquad = shutil.copytree(XQUAD, root / "xquad")
    for lang, change in (("de", "foreign"), ("zh", "repeat")):
        document = json.loads((xquad / f"xquad.{lang}.json").read_text())
        qas = document["data"][0]["paragraphs"][0]["qas"]
        qas[0]["id"] = "not-in-english" if change == "foreign" else qas[1]["id"]
        (xquad / f"xquad.{lang}.json").write_text(json.dumps(document))
    config = Path(TEXT_CONFIG).read_text().replace("eval_text_data", "# eval_text_data")
    (root / "no_eval.yaml").write_text(config)
    return root


BAD_INPUT = {
    "GQA file as VQAv2": (IMAGE_CONFIG, ["--eval_questions", str(GQA)], ["testdev_balanced_questions.json",
                                                                          "GQA questions file"]),
    "VQAv2 file as GQA": (IMAGE_CONFIG, ["--task", "gqa", "--task-data",
                                              str(DATA / "sample" / "v2_OpenEnded_mscoco_val2014_questions.json"),
                                              "--image-dir", str(GQA_IMAGES)], ["VQAv2-style questions file"]),
    "xGQA ids differ": (IMAGE_CONFIG, ["--task", "xgqa", "--task-data", "{bad}/xgqa", "--image-dir",
                                            str(GQA_IMAGES), "--languages", "de"],
                        ["testdev_balanced_questions_de.json: its question ids differ", "99999999"]),
    "XQuAD ids differ": (TEXT_CONFIG, ["--task", "xquad", "--task-data", "{bad}/xquad", "--languages", "de"],
                         ["xquad.de.json: its question ids differ", "not-in-english"]),
    "XQuAD repeated id": (TEXT_CONFIG, ["--task", "xquad", "--task-data", "{bad}/xquad", "--languages", "zh"],
                          ["xquad.zh.json", "repeats a question id"]),
    "unknown language": (TEXT_CONFIG, ["--task", "xquad", "--task-data", str(XQUAD), "--languages", "fr"],
                         ["no xquad.fr.json", "found: de, en, zh"]),
    "GQA missing": (IMAGE_CONFIG, ["--task", "gqa"], ["GQA questions file not found: data/gqa/testdev_balanced_questions.json",
                                                           "--task-data"]),
    "GQA images missing": (IMAGE_CONFIG, ["--task", "gqa", "--task-data", str(GQA)], ["data/gqa/images",
                                                                                          "--image-dir"]),
    "text set on an image model": (IMAGE_CONFIG, ["--task", "text", "--eval_text_data",
                                                       str(DATA / "alpaca_sample" / "alpaca_eval_en.json")],
                                   ["model_type causal_lm"]),
    "GQA on a text model": (TEXT_CONFIG, ["--task", "gqa", "--task-data", str(GQA), "--image-dir",
                                              str(GQA_IMAGES)], ["an image model (model_type instructblip or image_text_to_text)"]),
    "no held-out text": ("{bad}/no_eval.yaml", [], ["no_eval.yaml", "set eval_text_data"]),
    "option of another set": (IMAGE_CONFIG, ["--translate-first"], ["--translate-first applies to"]),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_2_naming_the_file(case, bad_files, capsys):
    config, argv, words = BAD_INPUT[case]
    config = config.replace("{bad}", str(bad_files))
    argv = [arg.replace("{bad}", str(bad_files)) for arg in argv]
    assert run_main(config, "--zero-shot", "--max-new-tokens", "2", "--out", str(bad_files / "out"), *argv) == 2
    error = capsys.readouterr().err
    for word in words:
        assert word in error, (word, error)


def test_bad_input_through_the_command_has_no_traceback(bad_files):
    done = subprocess.run(
        [sys.executable, "evaluate.py", "--config", TEXT_CONFIG, "--zero-shot", "--task", "xquad",
         "--task-data", str(bad_files / "xquad"), "--languages", "de"],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "xquad.de.json: its question ids differ" in done.stderr


def test_scorer_refuses_unknown_and_repeated_ids_in_results_evaluate_wrote(tmp_path, capsys):
    assert gqa_zero_shot(tmp_path / "gqa", "--limit", "3") == 0
    results = json.loads((tmp_path / "gqa" / "results.json").read_text())
    for name, bad in (("unknown", [*results, {"questionId": "123", "prediction": "yes"}]),
                      ("repeated", [*results, results[0]])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        assert gqa_metric.main(["--questions", str(GQA), "--results", str(path), "--allow-missing"]) == 2
        error = capsys.readouterr().err
        assert str(path) in error and ("not in the questions file" if name == "unknown" else "more than one") in error
