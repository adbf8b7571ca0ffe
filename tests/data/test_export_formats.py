"""prepare --format: the joined records in each framework's documented format, compared field by field with
hand-written records; the LAVIS file read back; TRL's own loaders on the TRL file; bad input exits 2."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from sit_vqa.apps.prepare import main
from sit_vqa.data.export_formats import FORMATS, read_lavis, turns
from sit_vqa.data.prepared import REPORT_FILE, load_prepared
from tests.data.conftest import build_official_data, image_name, write_official_files

SIT_PROMPT = "First describe the image, then answer the input question based on the image.\nQuestion: {}"
BASELINE_PROMPT = "Answer the input question based on the image.\nQuestion: {}"


@pytest.fixture
def files(tmp_path):
    return write_official_files(tmp_path / "inputs", build_official_data())


def run(files, out, *extra):
    return main(["--questions", str(files.questions), "--annotations", str(files.annotations),
                 "--captions", str(files.captions), "--image-dir", str(files.image_dir), "--out", str(out),
                 "--caption-policy", "first", *extra])


def read_records(path: Path) -> list:
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


# question 9000 of the official-format fixture, SIT, first caption, image relative to the image folder
IMAGE = image_name(9)
PROMPT = SIT_PROMPT.format("What is on the plate?")
TARGET = "Description: A plate of food.\nAnswer: rice"
EXPECTED_FIRST = {
    "llamafactory": {"messages": [{"role": "user", "content": "<image>" + PROMPT},
                                  {"role": "assistant", "content": TARGET}], "images": [IMAGE]},
    "swift": {"messages": [{"role": "user", "content": "<image>" + PROMPT},
                           {"role": "assistant", "content": TARGET}], "images": [IMAGE]},
    "trl": {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
                         {"role": "assistant", "content": [{"type": "text", "text": TARGET}]}], "images": [IMAGE]},
    "llava": {"id": "00000000-sit-9000", "image": IMAGE,
              "conversations": [{"from": "human", "value": "<image>\n" + PROMPT}, {"from": "gpt", "value": TARGET}]},
    "lavis": {"image": IMAGE, "question": PROMPT, "answer": [TARGET], "question_id": "00000000-sit-9000"},
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_matches_its_documented_record(files, tmp_path, name):
    out = tmp_path / name
    assert run(files, out, "--mode", "sit", "--format", name, "--image-root", str(files.image_dir)) == 0
    records = read_records(out / FORMATS[name].file_name)
    assert len(records) == 6
    first = records[0]
    assert first.keys() == EXPECTED_FIRST[name].keys()
    for key, value in EXPECTED_FIRST[name].items():
        assert first[key] == value, key
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["records"] == {"sit": 6} and report["questions_read"] == 6


@pytest.mark.parametrize("name", ["llamafactory", "swift"])
def test_image_tokens_match_images_and_registration(files, tmp_path, name):
    out = tmp_path / name
    assert run(files, out, "--mode", "multitask", "--format", name) == 0
    records = read_records(out / FORMATS[name].file_name)
    assert len(records) == 6 + 4 - 1  # baseline per question + one describe per captioned image with questions
    for record in records:
        tokens = sum(turn["content"].count("<image>") for turn in record["messages"])
        assert tokens == len(record["images"]) == 1 and Path(record["images"][0]).is_absolute()
        assert Path(record["images"][0]).is_file()
    if name == "llamafactory":
        info = json.loads((out / "dataset_info.json").read_text())
        assert info == {"sit_vqa": {"file_name": "sit_vqa.json", "formatting": "sharegpt",
                                    "columns": {"messages": "messages", "images": "images"},
                                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                             "assistant_tag": "assistant"}}}


def test_baseline_targets_hold_the_answer(files, tmp_path):
    assert run(files, tmp_path / "out", "--mode", "baseline", "--format", "lavis") == 0
    records = read_records(tmp_path / "out" / FORMATS["lavis"].file_name)
    assert records[0]["question"] == BASELINE_PROMPT.format("What is on the plate?")
    assert [r["answer"] for r in records] == [["rice"], ["1"], ["yes"], ["leaves"], ["1"], ["red"]]


def test_lavis_round_trip_keeps_every_record(files, tmp_path):
    assert run(files, tmp_path / "prepared", "--mode", "mixed", "--caption-policy", "all") == 0
    dataset, _ = load_prepared(tmp_path / "prepared")
    assert run(files, tmp_path / "lavis", "--mode", "mixed", "--caption-policy", "all", "--format", "lavis",
               "--image-root", str(files.image_dir)) == 0
    back = read_lavis(tmp_path / "lavis" / FORMATS["lavis"].file_name, image_root=files.image_dir)
    original = list(turns(dataset))
    assert len(back) == len(original) == dataset.num_rows > 12
    assert back == original


def test_reads_the_reference_codes_lavis_file(tmp_path):
    # the shape of SeqIns' merge_vqa_train.json: answer as a list, relative image paths
    path = tmp_path / "merge_vqa_train.json"
    path.write_text(json.dumps([
        {"image": "train2014/a.jpg", "question": "Describe the image.", "answer": ["A cat."]},
        {"image": "train2014/b.jpg", "question": "What is it?", "answer": "dog", "question_id": 7},
    ]))
    first, second = read_lavis(path, image_root="/data/coco")
    assert (first.image, first.prompt, first.target) == ("/data/coco/train2014/a.jpg", "Describe the image.", "A cat.")
    assert (second.id, second.target) == ("7", "dog")


@pytest.mark.parametrize("content, fragment", [
    ({"image": "a.jpg"}, "a JSON list"),
    ([{"image": "a.jpg", "answer": ["x"]}], "record 0 needs string fields 'image' and 'question'"),
    ([{"image": "a.jpg", "question": "q", "answer": []}], "'answer' must be a string or a non-empty list"),
])
def test_bad_lavis_files_are_named(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(Exception, match="bad.json") as error:
        read_lavis(path)
    assert fragment in str(error.value)


def test_trl_file_loads_with_datasets_as_trl_conversations(files, tmp_path):
    from trl.data_utils import is_conversational

    assert run(files, tmp_path / "trl", "--format", "trl") == 0
    table = datasets.load_dataset("json", data_files=str(tmp_path / "trl" / "sit_vqa.jsonl"), split="train")
    assert table.num_rows == 6 and set(table.column_names) == {"messages", "images"}
    assert all(is_conversational(row) for row in table)
    assert all(Path(row["images"][0]).is_file() for row in table)


def test_bad_input_exits_2_with_a_clear_message(files, tmp_path, capsys):
    assert run(files, tmp_path / "a", "--format", "axolotl") == 2
    assert "unknown export format 'axolotl'" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert run(files, taken, "--format", "llava") == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "mine"
    assert run(files, tmp_path / "b", "--format", "llava", "--image-root", str(tmp_path / "elsewhere")) == 2
    err = capsys.readouterr().err
    assert "is outside --image-root" in err and not (tmp_path / "b").exists()
    assert run(files, tmp_path / "c", "--image-root", str(files.image_dir)) == 2
    assert "--image-root applies to --format exports only" in capsys.readouterr().err


def test_without_format_prepare_writes_a_dataset(files, tmp_path):
    assert run(files, tmp_path / "out") == 0
    dataset, _ = load_prepared(tmp_path / "out")
    assert dataset.num_rows == 6


@pytest.mark.parametrize("mode, expected_target", [
    ("sit", "Description: A plate of food.\nAnswer: rice"), ("baseline", "rice")])
def test_assistant_tokens_of_a_real_processor_are_the_target(files, tmp_path, mode, expected_target):
    from tests.data.chat_processor_fixture import tiny_chat_processor

    assert run(files, tmp_path / mode, "--mode", mode, "--format", "trl") == 0
    records = read_records(tmp_path / mode / "sit_vqa.jsonl")
    texts = [part["text"] for r in records for m in r["messages"] for part in m["content"] if part["type"] == "text"]
    processor = tiny_chat_processor(texts)
    for record, check in zip(records, [expected_target] + [None] * len(records), strict=False):
        # TRL's step: the image parts carry the image the `images` column names
        messages = [{**m, "content": [{**p, "path": record["images"][0]} if p["type"] == "image" else p
                                      for p in m["content"]]} for m in record["messages"]]
        encoded = processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
        ids, mask = encoded["input_ids"][0], encoded["assistant_masks"][0]
        target = processor.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
        assert target == record["messages"][1]["content"][0]["text"]
        assert list(ids).count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 4  # 28/14 squared patches
        assert np.asarray(encoded["pixel_values"]).shape[-2:] == (28, 28)
        if check is not None:
            assert target == check


def test_trl_collator_trains_a_tiny_llava_on_the_exported_file(files, tmp_path):
    """TRL's own vision-language collator (assistant-only loss) on the exported file: the labels it keeps are
    exactly each record's target, and one optimizer step of a real (tiny) LLaVA runs on its batch."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from sit_vqa.modeling.chat_replicas import build_chat_replica

    assert run(files, tmp_path / "trl", "--format", "trl") == 0
    # the README's TRL recipe: load the JSON Lines, cast the image paths to images
    table = (datasets.load_dataset("json", data_files=str(tmp_path / "trl" / "sit_vqa.jsonl"), split="train")
             .cast_column("images", datasets.Sequence(datasets.Image())))
    model, processor = build_chat_replica("llava")
    collator = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)
    examples = [{"messages": r["messages"], "images": [image.convert("RGB") for image in r["images"]]}
                for r in table]
    batch = collator(examples)
    for labels, record in zip(batch["labels"], table, strict=True):
        kept = processor.tokenizer.decode(labels[labels != -100])
        # the replica's (the hub's) generation prompt ends at "ASSISTANT:": the space after it is the answer's
        # first character (fused into its first token) and </s> ends the turn
        assert kept == " " + record["messages"][1]["content"][0]["text"] + processor.tokenizer.eos_token
        prompt = processor.apply_chat_template(record["messages"][:1], add_generation_prompt=True, tokenize=False)
        assert processor.apply_chat_template(record["messages"], tokenize=False) == prompt + kept
    model.train()
    before = model.model.multi_modal_projector.linear_1.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.model.multi_modal_projector.linear_1.weight)
