"""A training run survives an unreadable image: the record is skipped and named (log, data report), and the run
stops only past a stated share of unreadable images, with a message that names check_images. Real truncated
JPEG files, the real transform of the tiny model, real training runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sit_vqa.config import load_config
from sit_vqa.errors import DataError
from sit_vqa.modeling.collate import SampleTransform, TransformedDataset
from sit_vqa.modeling.tiny import build_tiny_instructblip
from sit_vqa.training.records import load_training_records
from sit_vqa.training.run import run_training
from sit_vqa.training.unreadable import SkipUnreadableImages, unreadable_images_report

REPO = Path(__file__).resolve().parents[2]
SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"
SAMPLE_IMAGES = REPO / "data" / "sample" / "train2014"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a JPEG cut short, as a broken download leaves it


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def transform():
    model, processor = build_tiny_instructblip("decoder")
    return SampleTransform.for_model(model, processor)


def record(question_id: int, image: Path) -> dict:
    return {"question_id": question_id, "instruction": "What is it?", "target": "Answer: a cat", "image_path": str(image)}


def test_a_record_with_an_unreadable_image_is_skipped_and_named(tmp_path, transform, caplog):
    good = SAMPLE_IMAGES / sorted(os.listdir(SAMPLE_IMAGES))[0]
    bad = tmp_path / "bad.jpg"
    shutil.copy(good, bad)
    truncate(bad)
    log = tmp_path / "unreadable_images.jsonl"
    dataset = SkipUnreadableImages(TransformedDataset([record(1, bad), record(2, good)], transform), log)

    with caplog.at_level("WARNING"):
        sample = dataset[0]
    expected = transform(record(2, good))  # the next readable record takes its place
    assert sample["input_ids"] == expected["input_ids"]
    assert torch.equal(sample["pixel_values"], expected["pixel_values"])
    assert "skipping record question_id=1" in caplog.text and "check_images" in caplog.text
    assert str(bad) in caplog.text
    report = unreadable_images_report(log)
    assert report["count"] == 1 and report["records"][0]["record"] == "question_id=1"
    assert report["records"][0]["image"] == str(bad)
    dataset[0]  # read again (a resumed run, a second epoch): still one record in the report
    assert unreadable_images_report(log)["count"] == 1


def test_more_than_the_stated_share_stops_with_a_message_naming_check_images(tmp_path, transform):
    bad = tmp_path / "bad.jpg"
    shutil.copy(SAMPLE_IMAGES / sorted(os.listdir(SAMPLE_IMAGES))[0], bad)
    truncate(bad)
    good = SAMPLE_IMAGES / sorted(os.listdir(SAMPLE_IMAGES))[1]
    records = [record(i, bad) for i in range(4)] + [record(9, good)]
    dataset = SkipUnreadableImages(TransformedDataset(records, transform), None, max_share=0.5, min_reads=4)
    with pytest.raises(DataError, match=r"4 of the 4 training images read so far cannot be read \(more than the "
                                        r"50% a run tolerates\).*check_images: true"):
        dataset[0]
    only_bad = SkipUnreadableImages(TransformedDataset(records[:3], transform), None, min_reads=100)
    with pytest.raises(DataError, match="none of the 3 training records has a readable image.*check_images"):
        only_bad[0]


def images_of_the_run(tmp_path, *overrides):
    """The config of a 6-step run (one epoch of 24 records) on a copy of the sample images, and its records."""
    images = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, images)
    config = load_config(SMALL_CONFIG, [
        "--output_dir", str(tmp_path / "run"), "--prepared_cache_dir", str(tmp_path / "cache"),
        "--train_image_dir", str(images), "--report_to", "none", "--subset_questions", "24", "--train_all", "false",
        "--per_device_train_batch_size", "4", "--max_steps", "6", "--save_steps", "3", "--logging_steps", "1",
        "--overwrite_output_dir", "false", *overrides,
    ])
    records, _ = load_training_records(config.data, config.model.model_type)
    return config, images, records


def image_file(record: dict, images: Path) -> Path:
    path = Path(record["image_path"])
    return path if path.is_absolute() else images / path


def test_a_run_with_one_truncated_image_goes_on_and_reports_the_record(tmp_path, caplog):
    config, images, records = images_of_the_run(tmp_path)
    broken = image_file(records[5], images)
    truncate(broken)
    named = sorted(f"question_id={r['question_id']}" for r in records if image_file(r, images) == broken)

    with caplog.at_level("WARNING"):
        final = run_training(config)
    assert json.loads((final / "sit_vqa_checkpoint.json").read_text())["global_step"] == 6
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    skipped = report["unreadable_images"]
    assert sorted(row["record"] for row in skipped["records"]) == named and skipped["count"] == len(named)
    assert all(row["image"] == str(broken) for row in skipped["records"])
    assert "check_images" in skipped["hint"] and report["records_total"] == 24  # the join's report is kept
    assert f"skipping record {named[0]}" in caplog.text


@pytest.mark.parametrize("workers", ["0", "1"])  # read in this process, or in a DataLoader worker
def test_a_run_whose_images_are_mostly_unreadable_stops_with_a_clear_error(tmp_path, workers):
    config, images, records = images_of_the_run(tmp_path)
    kept = image_file(records[0], images)  # the records of one image stay readable: the run starts, then stops
    for path in images.iterdir():
        if path != kept:
            truncate(path)
    command = [sys.executable, "train.py", "--config", str(SMALL_CONFIG), "--output_dir", str(tmp_path / "run"),
               "--prepared_cache_dir", str(tmp_path / "cache"), "--train_image_dir", str(images), "--report_to",
               "none", "--subset_questions", "24", "--train_all", "false", "--max_steps", "6",
               "--dataloader_num_workers", workers]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("error: "):]
    assert message.startswith("error: ") and "worker process" not in message, message
    assert "training images read so far cannot be read" in message and "check_images: true" in message, message
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    readable = sum(image_file(r, images) == kept for r in records)
    assert report["unreadable_images"]["count"] == 24 - readable  # every other record was tried and named
