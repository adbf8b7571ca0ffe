"""What the outside-client check (bench/clients/run.sh, not run in CI: its installs download GBs) rests on,
checked without those installs: the bundled sample exports in every format with as many records as the join
report says (the count each framework must load), each record in its format's shape; the span check that each
client check applies to a framework's labels, on a real tokenizer, sees a target and fails on a wrong span; the
requirement lister leaves out what it is told to; the tiny LLaVA's template is the package's replica's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.apps.prepare import main as prepare
from sit_vqa.data.export_formats import FORMATS

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "bench" / "clients"
SAMPLE = REPO / "data" / "sample"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_clients_{name}", CLIENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = load("common")


def export(out: Path, name: str, image_root: Path | None = None) -> Path:
    root = ["--image-root", str(image_root)] if image_root else []
    assert prepare(["--questions", str(SAMPLE / "v2_OpenEnded_mscoco_train2014_questions.json"),
                    "--annotations", str(SAMPLE / "v2_mscoco_train2014_annotations.json"),
                    "--captions", str(SAMPLE / "captions_train2014.json"), "--image-dir", str(SAMPLE / "train2014"),
                    "--mode", "sit", "--format", name, "--out", str(out), *root]) == 0
    return out


def user_and_target(name: str, record: dict) -> tuple[str, str, list[str]]:
    """(the instruction as the format writes it, the target, the image references) of one record."""
    if name in ("llamafactory", "swift"):
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant") and user["content"].startswith("<image>")
        return user["content"].removeprefix("<image>"), assistant["content"], record["images"]
    if name == "trl":
        user, assistant = record["messages"]
        assert user["content"][0] == {"type": "image"} and [p["type"] for p in assistant["content"]] == ["text"]
        return user["content"][1]["text"], assistant["content"][0]["text"], record["images"]
    if name == "llava":
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt") and human["value"].startswith("<image>\n")
        return human["value"].removeprefix("<image>\n"), gpt["value"], [record["image"]]
    if name == "lavis":
        assert len(record["answer"]) == 1 and record["question_id"]
        return record["question"], record["answer"][0], [record["image"]]
    assert name == "seqins"
    return record["text_input"], record["text_output"], [record["image"]]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_bundled_sample_exports_as_the_client_checks_read_it(tmp_path, name):
    image_root = SAMPLE / "train2014" if name in ("llamafactory", "llava", "lavis") else None  # as run.sh does
    out = export(tmp_path / name, name, image_root)
    records = common.read_export(out, FORMATS[name].file_name)
    assert len(records) == common.reported_records(out) > 300
    for record in records:
        instruction, target, images = user_and_target(name, record)
        assert instruction.startswith("First describe the image, then answer") and "\nQuestion: " in instruction
        assert target.startswith("Description: ") and "\nAnswer: " in target
        assert len(images) == 1 and ((image_root or Path("/")) / images[0]).is_file()
        assert Path(images[0]).is_absolute() == (image_root is None)


@pytest.fixture(scope="module")
def llava_replica():
    from sit_vqa.modeling.chat_replicas import build_chat_replica

    return build_chat_replica("llava")[1]


MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the car?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Description: a red car.\nAnswer: red"}]}]


def encoded(processor):
    from PIL import Image

    output = processor.apply_chat_template([{**MESSAGES[0], "content": [
        {"type": "image", "image": Image.new("RGB", (32, 32), "red")}, MESSAGES[0]["content"][1]]}, MESSAGES[1]],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(output["input_ids"][0]), list(output["assistant_masks"][0])
    return ids, [i if m else -100 for i, m in zip(ids, mask, strict=True)]


def test_the_span_check_spells_the_supervised_text(llava_replica):
    ids, labels = encoded(llava_replica)
    in_context, alone = common.supervised_text(llava_replica.tokenizer, ids, labels)
    assert in_context == alone == " Description: a red car.\nAnswer: red</s>"


@pytest.mark.parametrize("damage, message", [
    (lambda labels, start: labels.__setitem__(start - 1, 0), "not one span"),   # a label on a prompt token
    (lambda labels, start: labels.__setitem__(start + 2, -100), "not one span"),  # a hole in the answer
    (lambda labels, start: labels.__setitem__(start, labels[start] + 1), "not one span"),  # not the input id
    (lambda labels, start: labels.__setitem__(slice(None), [-100] * len(labels)), "no supervised token"),
])
def test_the_span_check_fails_on_a_wrong_span(llava_replica, damage, message):
    ids, labels = encoded(llava_replica)
    start = next(i for i, label in enumerate(labels) if label != -100)
    damage(labels, start)
    with pytest.raises(AssertionError, match=message):
        common.supervised_text(llava_replica.tokenizer, ids, labels)


def test_first_differences_names_the_records():
    assert common.first_differences(["a", "b", "c"], ["a", "x", "c"]) == ["record 1: labels 'b' != expected 'x'"]


def test_the_requirement_lister_drops_what_it_is_told(tmp_path):
    run = subprocess.run([sys.executable, str(CLIENTS / "requirements_of.py"), "trl", "accelerate"],
                         capture_output=True, text=True, check=True)
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    printed = [Requirement(line) for line in run.stdout.splitlines()]
    names = {r.name for r in printed}
    assert "transformers" in names and "datasets" in names and "accelerate" not in names
    assert all(r.marker is None for r in printed)
    extras_only = {Requirement(r).name for r in requires("trl") if "extra ==" in r} - {r.name for r in printed}
    assert extras_only  # trl has extra-only requirements, and none of them was printed


def test_run_sh_refuses_an_unknown_framework_before_touching_anything(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_text("mine")
    run = subprocess.run(["bash", str(CLIENTS / "run.sh"), "trl", "axolotl"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "WORK": str(work)})
    assert run.returncode == 2 and "unknown framework 'axolotl'" in run.stderr
    assert (work / "keep").read_text() == "mine"


def test_the_tiny_llava_template_is_the_replicas():
    from sit_vqa.modeling.chat_replicas import LLAVA_TEMPLATE

    assert load("tiny_llava").LLAVA_TEMPLATE == LLAVA_TEMPLATE
