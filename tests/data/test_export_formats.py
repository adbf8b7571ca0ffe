"""prepare --format: the joined records in each framework's documented format, compared field by field with
hand-written records; the LAVIS and SeqIns files read back (and files in LAVIS's and SeqIns' own field names);
TRL's own loaders on the TRL file; bad input exits 2."""

import json
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest

from sit_vqa.apps.prepare import main
from sit_vqa.data.export_formats import FORMATS, Turn, read_lavis, read_seqins, turns
from sit_vqa.data.prepared import REPORT_FILE, load_prepared
from sit_vqa.errors import DataError
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
    "seqins": {"image": IMAGE, "caption": "A plate of food.", "text_input": PROMPT, "text_output": TARGET,
               "image_id": 9, "question_id": "00000000-sit-9000"},
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
    original = [replace(turn, image_id=None, caption=None) for turn in turns(dataset)]  # LAVIS VQA has neither
    assert len(back) == len(original) == dataset.num_rows > 12
    assert back == original


@pytest.mark.parametrize("mode", ["mixed", "multitask"])
def test_seqins_round_trip_keeps_every_record(files, tmp_path, mode):
    assert run(files, tmp_path / "prepared", "--mode", mode, "--caption-policy", "all") == 0
    dataset, _ = load_prepared(tmp_path / "prepared")
    assert run(files, tmp_path / "seqins", "--mode", mode, "--caption-policy", "all", "--format", "seqins",
               "--image-root", str(files.image_dir)) == 0
    back = read_seqins(tmp_path / "seqins" / FORMATS["seqins"].file_name, image_root=files.image_dir)
    original = list(turns(dataset))
    assert len(back) == len(original) == dataset.num_rows > 12
    assert back == original  # id, image, instruction, target, image id and caption of every record


def test_seqins_export_avoids_the_reference_defects(files, tmp_path):
    """SeqIns' make_instruct_data.py kept one question and one caption per image, took answer[0], and put the
    caption in the baseline target; the fixture's image 9 (3 questions, 3 captions) and question 25000 (first
    annotator "tree", consensus "leaves") would show each."""
    assert run(files, tmp_path / "out", "--mode", "baseline", "--caption-policy", "all", "--format", "seqins") == 0
    records = read_records(tmp_path / "out" / FORMATS["seqins"].file_name)
    image_9 = [r for r in records if r["image_id"] == 9]
    assert len(image_9) == 9
    assert len({r["text_input"] for r in image_9}) == 3 and len({r["caption"] for r in image_9}) == 3
    assert {r["text_output"] for r in records if "giraffe eating" in r["text_input"]} == {"leaves"}
    assert [r["text_output"] for r in records if r["image_id"] == 30] == ["red"]
    assert all(r["text_output"] != r["caption"] for r in records)


def test_reads_a_file_in_seqins_own_fields(tmp_path):
    # the records SeqIns' LAVIS/make_instruct_data.py writes for LAVIS's coco_caption builder: no question_id
    path = tmp_path / "merge_vqa_train.json"
    path.write_text(json.dumps([
        {"image": "train2014/COCO_train2014_000000000009.jpg", "caption": "A plate of food.",
         "text_input": "First describe the image, then answer the input question based on the image.\nQuestion: "
                       "What is on the plate?",
         "text_output": "Description: A plate of food.\nAnswer: rice", "image_id": 9},
        {"image": "/abs/COCO_train2014_000000000025.jpg", "caption": "A giraffe eating leaves.",
         "text_input": "Answer the input question based on the image.\nQuestion: How many giraffes?",
         "text_output": "1", "image_id": 25},
    ]))
    first, second = read_seqins(path, image_root="/data/coco")
    assert first == Turn("0", "/data/coco/train2014/COCO_train2014_000000000009.jpg",
                         SIT_PROMPT.format("What is on the plate?"), "Description: A plate of food.\nAnswer: rice",
                         9, "A plate of food.")
    assert second == Turn("1", "/abs/COCO_train2014_000000000025.jpg", BASELINE_PROMPT.format("How many giraffes?"),
                          "1", 25, "A giraffe eating leaves.")


def test_reads_lavis_own_vqa_file(tmp_path):
    # the shape of LAVIS's vqa_train.json: answer as a list, relative image paths, question_id, dataset
    path = tmp_path / "vqa_train.json"
    path.write_text(json.dumps([
        {"question_id": 262148000, "question": "Where is he looking?", "answer": ["down", "down", "at table"],
         "image": "train2014/COCO_train2014_000000262148.jpg", "dataset": "vqa"},
        {"image": "train2014/b.jpg", "question": "What is it?", "answer": "dog"},
    ]))
    first, second = read_lavis(path, image_root="/data/coco")
    assert first == Turn("262148000", "/data/coco/train2014/COCO_train2014_000000262148.jpg", "Where is he looking?",
                         "down")
    assert (second.id, second.target) == ("1", "dog")


SEQINS_RECORD = {"image": "a.jpg", "caption": "c", "text_input": "q", "text_output": "t", "image_id": 1}


@pytest.mark.parametrize("reader, content, fragment", [
    (read_lavis, {"image": "a.jpg"}, "a JSON list"),
    (read_lavis, [{"image": "a.jpg", "answer": ["x"]}], "record 0 needs string fields 'image', 'question'"),
    (read_lavis, [{"image": "a.jpg", "question": "q", "answer": []}], "'answer' must be a string or a non-empty list"),
    (read_lavis, [SEQINS_RECORD], "is read by read_seqins"),
    (read_seqins, ["a.jpg"], "record 0 is not a JSON object"),
    (read_seqins, [{"image": "a.jpg", "question": "q", "answer": ["x"]}], "is read by read_lavis"),
    (read_seqins, [SEQINS_RECORD, {**SEQINS_RECORD, "text_output": None}],
     "record 1 needs string fields 'image', 'text_input', 'text_output'"),
    (read_seqins, [{**SEQINS_RECORD, "image_id": [1]}], "'image_id' must be an integer or a string"),
    (read_seqins, [{**SEQINS_RECORD, "caption": ["c"]}], "'caption' must be a string"),
])
def test_bad_lavis_and_seqins_files_are_named(tmp_path, reader, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match="bad.json") as error:
        reader(path)
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
