"""The demo's Python API and command line on a quickstart checkpoint: the evaluation's own outputs for the
same inputs, image sources, prompts, streaming, batching, and clear errors for bad input."""

import io
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sit_vqa.apps import demo as demo_cli
from sit_vqa.config import load_config
from sit_vqa.samples.generated import ensure_config_sample
from sit_vqa.data.prompts import BASELINE_TASK, SIT_TASK
from sit_vqa.apps.demo import VqaDemo, load_image
from sit_vqa.errors import InputError, SitVqaError
from sit_vqa.evaluation.vqa import load_eval_records
from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.metrics.vqa import question_accuracy
from tests.evaluation.test_evaluation import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO / "data" / "sample" / "val2014" / "COCO_val2014_000000325422.jpg"
# Flip to True once the quickstart learns (another issue): the easy-question test below then runs.
SHORT = GenerationSettings(max_new_tokens=24)


@pytest.fixture(scope="module")
def demo(quickstart_run):
    return VqaDemo.load(quickstart_run)


@pytest.fixture(scope="module")
def eval_records():
    config = load_config(REPO / "configs" / "quickstart.yaml")
    ensure_config_sample(config)
    return load_eval_records(config.data, prompt="sit", limit=6, seed=0).dataset


def test_answers_equal_the_evaluations_predictions_for_the_same_inputs(demo, eval_records):
    generations = generate_texts(demo.model, demo.processor, eval_records,
                                 GenerationSettings(max_new_tokens=SHORT.max_new_tokens), progress=False)
    replies = demo.ask_many([(r["image_path"], r["question"]) for r in eval_records], options=SHORT, batch_size=4)
    assert [reply.raw for reply in replies] == generations
    assert [reply.prompt for reply in replies] == list(eval_records["instruction"])
    single = demo.ask(eval_records[1]["image_path"], eval_records[1]["question"], options=SHORT)
    assert single == replies[1]  # batched (left-padded) and alone agree


@pytest.mark.slow
def test_a_learned_quickstart_answers_sample_questions_right(learned_quickstart):
    """The demo on the README's quickstart checkpoint answers held-out sample questions far better than the
    majority answer does (the quickstart's measured gap is 30 points; 15 are asked here)."""
    final, config, _ = learned_quickstart
    records = load_eval_records(config.data, prompt="sit", limit=60, seed=0).dataset
    demo = VqaDemo.load(final, device="cpu")
    replies = demo.ask_many([(r["image_path"], r["question"]) for r in records])
    accuracy = sum(question_accuracy(reply.answer, r["answers"]) for reply, r in zip(replies, records)) / len(records)
    majority_answer = Counter(records["answer"]).most_common(1)[0][0]
    majority = sum(question_accuracy(majority_answer, r["answers"]) for r in records) / len(records)
    assert accuracy >= majority + 0.15, (accuracy, majority)
    assert sum(reply.description is not None for reply in replies) >= 0.9 * len(replies)


def test_path_bytes_and_pil_image_give_the_same_reply(demo):
    question = "What color is the shape?"
    by_path = demo.ask(SAMPLE_IMAGE, question, options=SHORT)
    assert demo.ask(SAMPLE_IMAGE.read_bytes(), question, options=SHORT) == by_path
    assert demo.ask(Image.open(SAMPLE_IMAGE), question, options=SHORT) == by_path
    assert by_path.raw and by_path.description is not None  # a SIT checkpoint writes "Description: ..."


def test_prompt_follows_the_training_mode_unless_chosen(demo):
    assert demo.trained_mode == "sit" and demo.default_prompt() == "sit"
    assert demo.ask(SAMPLE_IMAGE, "Is it red?", options=SHORT).prompt.startswith(SIT_TASK)
    baseline = demo.ask(SAMPLE_IMAGE, "Is it red?", prompt="baseline", options=SHORT)
    assert baseline.prompt == BASELINE_TASK + ".\nQuestion: Is it red?"


def test_stream_grows_to_the_reply_of_ask(demo):
    replies = list(demo.stream(SAMPLE_IMAGE, "How many shapes are there?", options=SHORT))
    assert replies[-1] == demo.ask(SAMPLE_IMAGE, "How many shapes are there?", options=SHORT)
    assert len(replies) > 2
    partial = [reply.raw for reply in replies[:-1]]
    assert all(later.startswith(earlier) for earlier, later in zip(partial, partial[1:]))


def test_beam_search_and_sampling_settings_reach_generate(demo):
    beams = GenerationSettings(max_new_tokens=12, num_beams=3)
    assert list(demo.stream(SAMPLE_IMAGE, "Is it red?", options=beams)) == [demo.ask(SAMPLE_IMAGE, "Is it red?", options=beams)]
    sampling = GenerationSettings(max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.3)
    assert sampling.generate_kwargs() == dict(max_new_tokens=12, num_beams=1, do_sample=True, repetition_penalty=1.3,
                                              temperature=0.7, top_p=0.9)
    assert isinstance(demo.ask(SAMPLE_IMAGE, "Is it red?", options=sampling).raw, str)
    with pytest.raises(InputError, match="top_p must be at most 1"):
        GenerationSettings(top_p=1.5)
    with pytest.raises(InputError, match="max_new_tokens must be a positive integer"):
        GenerationSettings(max_new_tokens=0)


def test_bad_images_are_refused_with_a_message(tmp_path, monkeypatch):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    with pytest.raises(InputError, match="notes.jpg is not an image file PIL can read"):
        load_image(not_image)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(SAMPLE_IMAGE.read_bytes()[:2000])
    with pytest.raises(InputError, match="truncated.jpg is truncated or corrupt"):
        load_image(truncated)
    with pytest.raises(InputError, match="the uploaded image is truncated or corrupt"):
        load_image(SAMPLE_IMAGE.read_bytes()[:2000])
    with pytest.raises(InputError, match="image file not found"):
        load_image(tmp_path / "missing.png")
    width, height = Image.open(SAMPLE_IMAGE).size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height - 1)  # PIL only warns between 1x and 2x
    with pytest.raises(InputError, match="too large to decode safely"):
        load_image(SAMPLE_IMAGE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height // 3)  # PIL's own error from 2x on
    with pytest.raises(InputError, match="too large to decode safely") as refused:
        load_image(SAMPLE_IMAGE.read_bytes())
    limits = {int(number.replace(",", "")) for number in re.findall(r"\d[\d,]{3,}", str(refused.value))}
    assert limits == {width * height // 3}, str(refused.value)  # one limit quoted: the one that refused it


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_huge_images_are_decoded_reduced_small_ones_exactly(tmp_path, suffix):
    rng = np.random.default_rng(0)
    huge = tmp_path / f"huge{suffix}"
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(huge)
    reduced = load_image(huge, reduce_above=896)
    assert 448 <= min(reduced.size) < 1000 and reduced.size[0] > reduced.size[1]  # aspect ratio kept
    assert min(load_image(huge).size) == 3000  # without the cap: the full image
    with Image.open(SAMPLE_IMAGE) as exact:
        assert np.array_equal(np.asarray(load_image(SAMPLE_IMAGE, reduce_above=896)), np.asarray(exact.convert("RGB")))


def test_the_demo_decodes_a_huge_upload_reduced(demo, tmp_path):
    size = demo.processor.image_processor.size
    assert demo.reduce_above == 4 * min(size["height"], size["width"])
    huge = tmp_path / "huge.png"
    Image.new("RGB", (40 * demo.reduce_above, 30 * demo.reduce_above), (220, 40, 40)).save(huge)
    reduced = load_image(huge, reduce_above=demo.reduce_above)
    assert min(reduced.size) < demo.reduce_above
    assert demo.ask(huge, "Is it red?", options=SHORT) == demo.ask(reduced, "Is it red?", options=SHORT)


def test_bad_questions_are_refused_with_a_message(demo):
    for empty in ("", "   \n"):
        with pytest.raises(InputError, match="the question is empty"):
            demo.ask(SAMPLE_IMAGE, empty)
    with pytest.raises(InputError, match="characters long"):
        demo.ask(SAMPLE_IMAGE, "is it red? " * 200)
    with pytest.raises(InputError, match="too long: with the instruction it is .* at most 128"):
        demo.ask(SAMPLE_IMAGE, "is it red? " * 40)
    with pytest.raises(InputError, match="pair 1: the question is empty"):
        demo.ask_many([(SAMPLE_IMAGE, "is it red?"), (SAMPLE_IMAGE, "")])


def test_bad_checkpoints_are_refused_with_a_message(quickstart_run, tmp_path):
    with pytest.raises(InputError, match="checkpoint directory not found"):
        VqaDemo.load(tmp_path / "missing")
    with pytest.raises(SitVqaError, match="is not a sit-vqa checkpoint"):
        VqaDemo.load(tmp_path)
    incomplete = tmp_path / "incomplete" / "final"
    shutil.copytree(quickstart_run / "final", incomplete)
    (incomplete / "trainable.safetensors").unlink()
    with pytest.raises(SitVqaError, match="cannot read trainable weights"):
        VqaDemo.load(incomplete)
    without_base = tmp_path / "without_base" / "final"
    shutil.copytree(quickstart_run / "final", without_base)
    shutil.rmtree(without_base / "base_model")  # a tiny model's base weights travel inside the checkpoint
    with pytest.raises(SitVqaError, match="its base model is missing: .*base_model.* --base-model DIR"):
        VqaDemo.load(without_base)
    # the quickstart trains every weight, LLaMA ones included: they do not fit a T5 base model
    t5_checkpoint = write_tiny_checkpoint(tmp_path / "t5", "--tiny_model", "t5")
    shutil.copy(quickstart_run / "final" / "trainable.safetensors", t5_checkpoint / "trainable.safetensors")
    with pytest.raises(SitVqaError, match="are not parameters of InstructBlipForConditionalGeneration"):
        VqaDemo.load(t5_checkpoint)


# ------------------------------------------------------------------------------------------- command line


def test_cli_prints_description_and_answer(quickstart_run, demo, capsys):
    argv = ["--checkpoint", str(quickstart_run), "--image", str(SAMPLE_IMAGE), "--max-new-tokens", "24"]
    assert demo_cli.main([*argv, "--question", "Is it red?"]) == 0
    reply = demo.ask(SAMPLE_IMAGE, "Is it red?", options=SHORT)
    assert capsys.readouterr().out == f"description: {reply.description}\nanswer: {reply.answer}\n"


def test_cli_reads_questions_one_per_line(quickstart_run, demo, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Is it red?\n\nHow many shapes are there?\n"))
    argv = ["--checkpoint", str(quickstart_run / "final"), "--image", str(SAMPLE_IMAGE), "--max-new-tokens", "24"]
    assert demo_cli.main(argv) == 0
    expected = ""
    for question in ("Is it red?", "How many shapes are there?"):
        reply = demo.ask(SAMPLE_IMAGE, question, options=SHORT)
        expected += f"description: {reply.description}\nanswer: {reply.answer}\n"
    assert capsys.readouterr().out == expected


def test_cli_bad_input_exits_2_with_a_message(quickstart_run, tmp_path, capsys):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    for argv, message in (
        (["--image", str(not_image), "--question", "q"], "notes.txt is not an image file"),
        (["--image", str(SAMPLE_IMAGE), "--question", " "], "the question is empty"),
        (["--image", str(SAMPLE_IMAGE), "--question", "q", "--num-beams", "0"], "num_beams must be a positive"),
    ):
        assert demo_cli.main(["--checkpoint", str(quickstart_run), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    assert demo_cli.main(["--checkpoint", str(tmp_path), "--image", str(SAMPLE_IMAGE), "--question", "q"]) == 2
    assert "is not a sit-vqa checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        demo_cli.main(["--checkpoint", str(quickstart_run)])  # neither --image nor --serve
    assert exit_info.value.code == 2


def test_cli_runs_as_a_module_without_a_traceback(quickstart_run, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    done = subprocess.run([sys.executable, "-m", "sit_vqa.apps.demo", "--checkpoint", str(quickstart_run),
                           "--image", str(not_image), "--question", "Is it red?"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_serve_without_gradio_names_the_demo_extra(quickstart_run):
    """The base install has no gradio: --serve said ModuleNotFoundError in a traceback. Here gradio is
    installed, so the child process blocks its import (None in sys.modules makes `import gradio` fail)."""
    blocked = ("import runpy, sys; sys.modules['gradio'] = None; sys.argv[0] = 'demo'; "
               "runpy.run_module('sit_vqa.apps.demo', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", blocked, "--checkpoint", str(quickstart_run), "--serve"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert "--serve needs gradio" in result.stderr and 'pip install -e ".[demo]"' in result.stderr, result.stderr
