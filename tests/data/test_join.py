"""The VQAv2 x COCO join: every question kept, caption/answer policies, subsets, modes with their exact
instruction/target strings, the report's drop counts, bad input, and the on-disk dataset and its cache."""

import json
import os
from collections import Counter

import datasets
import pytest

from sit_vqa.data.coco import load_captions
from sit_vqa.data.join import (
    COLUMNS,
    DESCRIBE_QUESTION_ID,
    JoinOptions,
    JoinReport,
    join_records,
)
from sit_vqa.data.prepared import (
    REPORT_FILE,
    cache_key,
    load_prepared,
    prepare_cached,
    prepare_dataset,
)
from sit_vqa.data.prompts import Templates, parse_sit_output
from sit_vqa.data.vqav2 import read_annotations, read_questions
from sit_vqa.errors import ConfigError, DataError

from .conftest import CAPTIONS, QUESTIONS, image_name

QUESTION_IDS = [q[0] for q in QUESTIONS]
QUESTION_TEXT = {q[0]: q[2] for q in QUESTIONS}
CONSENSUS = {q[0]: q[3] for q in QUESTIONS}
IMAGE_OF = {q[0]: q[1] for q in QUESTIONS}
NORMALISED = {image: [" ".join(text.split()) for text in texts] for image, texts in CAPTIONS.items()}


def run_join(files, **options):
    """Read the files and join them in memory: (records as dicts, report)."""
    options = JoinOptions(**options)
    table, report = join_records(
        read_questions(files.questions),
        read_annotations(files.annotations, options.answer_policy),
        load_captions(files.captions),
        files.image_dir,
        options,
    )
    assert table.column_names == list(COLUMNS)
    return table.to_pylist(), report


def add_image(data, image_id, captions, questions):
    """Add an image with captions and (question_id, text, answers) questions to official_data."""
    data["captions"]["images"].append({"id": image_id, "file_name": image_name(image_id)})
    for index, caption in enumerate(captions):
        data["captions"]["annotations"].append({"image_id": image_id, "id": image_id * 100 + index, "caption": caption})
    for question_id, text, answers in questions:
        data["questions"]["questions"].append({"image_id": image_id, "question": text, "question_id": question_id})
        data["annotations"]["annotations"].append({
            "question_id": question_id, "image_id": image_id, "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i} for i, a in enumerate(answers)],
            "answer_type": "other", "question_type": "what"})


# --- the join -------------------------------------------------------------------------------------------


def test_every_question_of_an_image_is_kept(official_files):
    """Not one question per image (the released code's dict keyed by image kept one)."""
    records, report = run_join(official_files, mode="sit")
    assert [r["question_id"] for r in records] == QUESTION_IDS
    assert Counter(r["image_id"] for r in records) == {9: 3, 25: 2, 30: 1}
    assert report.questions_read == report.joined == report.questions_written == 6
    assert report.images_written == 3


def test_caption_policy_all_reaches_every_caption_of_every_question(official_files):
    records, report = run_join(official_files, mode="sit", caption_policy="all")
    pairs = [(r["question_id"], r["caption"]) for r in records]
    expected = [(qid, caption) for qid in QUESTION_IDS for caption in NORMALISED[IMAGE_OF[qid]]]
    assert pairs == expected  # question file order, captions in file order
    assert report.records == {"sit": 3 * 3 + 2 * 2 + 1}


def test_caption_policy_first(official_files):
    records, _ = run_join(official_files, caption_policy="first")
    assert {r["question_id"]: r["caption"] for r in records} == {
        qid: NORMALISED[IMAGE_OF[qid]][0] for qid in QUESTION_IDS}


def test_caption_policy_longest_takes_the_first_on_ties(official_data, write_official):
    add_image(official_data, 60, ["short one", "same length A", "same length B", "tiny"], [(60000, "Q?", ["a"] * 10)])
    records, _ = run_join(write_official(official_data), caption_policy="longest")
    captions = {r["question_id"]: r["caption"] for r in records}
    assert captions[9000] == "Broccoli and rice on a white plate next to a silver fork."
    assert captions[25000] == captions[25001] == "A tall giraffe. Answer: it is near trees"
    assert captions[60000] == "same length A"


def test_caption_policy_random_is_seeded_per_question(official_data, write_official):
    image_captions = [f"caption number {k}" for k in range(5)]
    add_image(official_data, 50, image_captions, [(50000 + k, f"Question {k}?", ["x"] * 10) for k in range(40)])
    files = write_official(official_data)

    def chosen(seed):
        records, _ = run_join(files, caption_policy="random", subset_seed=seed)
        return [r["caption"] for r in records if r["image_id"] == 50]

    first = chosen(0)
    assert first == chosen(0)
    assert set(first) <= set(image_captions) and len(set(first)) > 1  # per question, not one per image
    assert chosen(1) != first


def test_records_keep_all_answers_and_types_for_evaluation(official_files):
    records, _ = run_join(official_files, mode="mixed", caption_policy="all")
    by_question = {q[0]: q for q in QUESTIONS}
    for record in records:
        _, image, question, consensus, answers, answer_type, question_type = by_question[record["question_id"]]
        assert (record["image_id"], record["question"], record["answer"]) == (image, question, consensus)
        assert record["answers"] == answers and len(answers) == 10
        assert (record["answer_type"], record["question_type"]) == (answer_type, question_type)


def test_answer_is_the_consensus_not_the_first_annotator(official_files):
    for policy in ("multiple_choice_answer", "most_frequent"):
        records, _ = run_join(official_files, mode="baseline", answer_policy=policy)
        record = next(r for r in records if r["question_id"] == 25000)
        assert record["answers"][0] == "tree"
        assert record["answer"] == record["target"] == "leaves"


def test_most_frequent_answer_policy_breaks_ties_deterministically(official_data, write_official):
    add_image(official_data, 70, ["a cat"], [(70000, "Which?", ["yes", "no"] * 5)])
    official_data["annotations"]["annotations"][-1]["multiple_choice_answer"] = "yes"
    files = write_official(official_data)
    records, _ = run_join(files, mode="baseline", answer_policy="most_frequent")
    assert next(r for r in records if r["question_id"] == 70000)["target"] == "no"
    records, _ = run_join(files, mode="baseline")
    assert next(r for r in records if r["question_id"] == 70000)["target"] == "yes"


def test_image_path_is_absolute_and_from_the_captions_file(official_data, write_official):
    official_data["captions"]["images"][1]["file_name"] = "giraffe.jpg"  # image 25
    files = write_official(official_data)
    records, _ = run_join(files)
    paths = {r["image_id"]: r["image_path"] for r in records}
    directory = files.image_dir.resolve()
    assert paths == {9: str(directory / image_name(9)), 25: str(directory / "giraffe.jpg"),
                     30: str(directory / image_name(30))}


# --- modes: exact instruction / target strings ------------------------------------------------------------

BASELINE = "Answer the input question based on the image.\nQuestion: {}"
SIT = "First describe the image, then answer the input question based on the image.\nQuestion: {}"


def test_baseline_target_is_the_answer_alone(official_files):
    """Not "Answer: <caption>" (the released code's baseline target)."""
    records, report = run_join(official_files, mode="baseline")
    assert [(r["instruction"], r["target"], r["kind"]) for r in records] == [
        (BASELINE.format(QUESTION_TEXT[qid]), CONSENSUS[qid], "baseline") for qid in QUESTION_IDS]
    assert report.records == {"baseline": 6} and report.mode == "baseline"


def test_sit_target_keeps_markers_colons_and_newline(official_files):
    """Not stripped of ':' and newlines (the released code's text cleaner removed the markers)."""
    records, _ = run_join(official_files, mode="sit", caption_policy="all")
    first = records[0]
    assert first["instruction"] == SIT.format("What is on the plate?")
    assert first["target"] == "Description: A plate of food.\nAnswer: rice"
    with_colon = next(r for r in records if r["question_id"] == 9000 and r["caption"].startswith("Dinner"))
    assert with_colon["target"] == "Description: Dinner: rice, broccoli and a fork.\nAnswer: rice"
    for record in records:
        assert record["kind"] == "sit"
        assert record["target"] == f"Description: {record['caption']}\nAnswer: {record['answer']}"
        parsed = parse_sit_output(record["target"])  # the evaluation's parser gets both parts back
        assert (parsed.description, parsed.answer) == (record["caption"], record["answer"])


def test_mixed_gives_both_forms_of_every_question_by_default(official_files):
    records, report = run_join(official_files, mode="mixed")
    assert report.records == {"baseline": 6, "sit": 6}
    assert [(r["question_id"], r["kind"]) for r in records] == (
        [(qid, "baseline") for qid in QUESTION_IDS] + [(qid, "sit") for qid in QUESTION_IDS])
    for record in records:
        template = BASELINE if record["kind"] == "baseline" else SIT
        assert record["instruction"] == template.format(record["question"])


def test_mixed_sit_fraction_adds_sit_for_a_seeded_share(official_files):
    def sit_questions(seed, fraction):
        records, report = run_join(official_files, mode="mixed", mixed_sit_fraction=fraction, subset_seed=seed)
        assert report.records["baseline"] == 6
        return [r["question_id"] for r in records if r["kind"] == "sit"]

    half = sit_questions(0, 0.5)
    assert len(half) == 3 and half == sit_questions(0, 0.5)
    assert len({tuple(sit_questions(seed, 0.5)) for seed in range(6)}) > 1
    assert sit_questions(0, 0.0) == []


def test_multitask_adds_one_describe_record_per_image(official_files):
    records, report = run_join(official_files, mode="multitask", caption_policy="first")
    assert report.records == {"baseline": 6, "describe": 3}
    assert [r["kind"] for r in records[:6]] == ["baseline"] * 6
    describe = records[6:]
    assert [r["image_id"] for r in describe] == [9, 25, 30]  # image 42 has no question: not selected
    for record in describe:
        assert record["question_id"] == DESCRIBE_QUESTION_ID
        assert (record["question"], record["answer"], record["answers"], record["answer_type"],
                record["question_type"]) == ("", "", [], "", "")
        assert record["instruction"] == "Describe the image."
        assert record["target"] == record["caption"] == NORMALISED[record["image_id"]][0]
        assert record["image_path"].endswith(image_name(record["image_id"]))


def test_multitask_with_all_captions_describes_every_caption(official_files):
    records, report = run_join(official_files, mode="multitask", caption_policy="all")
    describe = [(r["image_id"], r["target"]) for r in records if r["kind"] == "describe"]
    assert describe == [(image, caption) for image in (9, 25, 30) for caption in NORMALISED[image]]
    assert report.records == {"baseline": 14, "describe": 6}


CUSTOM = Templates(
    baseline_instruction="Q: {question} {{literal braces}}",
    baseline_target="{answer:>6}|",
    sit_instruction="{question}",
    sit_target="<{caption!r}> => {answer}\n",
    describe_instruction="Caption this.",
    describe_target="{caption}{caption}",
)


@pytest.mark.parametrize("templates", [Templates(), CUSTOM], ids=["default", "custom"])
@pytest.mark.parametrize("mode", ["baseline", "sit", "mixed", "multitask"])
def test_every_record_matches_templates_render(official_files, mode, templates):
    records, _ = run_join(official_files, mode=mode, caption_policy="all", templates=templates)
    assert records
    for record in records:
        expected = templates.render(record["kind"], question=record["question"], caption=record["caption"],
                                    answer=record["answer"])
        assert (record["instruction"], record["target"]) == expected


def test_custom_templates_render_exactly(official_files):
    records, _ = run_join(official_files, mode="mixed", caption_policy="first", templates=CUSTOM)
    baseline = next(r for r in records if r["kind"] == "baseline" and r["question_id"] == 9000)
    sit = next(r for r in records if r["kind"] == "sit" and r["question_id"] == 9000)
    assert baseline["instruction"] == "Q: What is on the plate? {literal braces}"
    assert baseline["target"] == "  rice|"
    assert sit["target"] == "<'A plate of food.'> => rice\n"


# --- subsets --------------------------------------------------------------------------------------------


def test_subset_of_questions_is_seeded_and_keeps_file_order(official_files):
    def subset(seed):
        records, report = run_join(official_files, subset_questions=3, subset_seed=seed)
        assert report.subset == {"by": "questions", "requested": 3, "available": 6, "seed": seed}
        assert (report.selected, report.not_selected, report.questions_written) == (3, 3, 3)
        ids = [r["question_id"] for r in records]
        assert ids == sorted(ids, key=QUESTION_IDS.index)
        return ids

    assert subset(0) == subset(0)
    assert len({tuple(subset(seed)) for seed in range(6)}) > 1


def test_subset_of_images_keeps_all_their_questions(official_files):
    def subset(seed):
        records, report = run_join(official_files, subset_images=2, subset_seed=seed)
        images = {r["image_id"] for r in records}
        assert len(images) == 2 and report.images_written == 2
        assert [r["question_id"] for r in records] == [qid for qid in QUESTION_IDS if IMAGE_OF[qid] in images]
        assert report.subset["by"] == "images" and report.selected == len(records)
        return images

    assert subset(3) == subset(3)
    assert len({frozenset(subset(seed)) for seed in range(6)}) > 1


@pytest.mark.parametrize(("option", "available"), [("subset_questions", 6), ("subset_images", 3)])
def test_subset_larger_than_available_is_an_error(official_files, option, available):
    with pytest.raises(DataError, match=f"only {available} .* ask for at most {available}"):
        run_join(official_files, **{option: available + 1})
    records, _ = run_join(official_files, **{option: available})
    assert len(records) == 6


@pytest.mark.parametrize("options", [
    {"subset_questions": 0}, {"subset_images": -1}, {"subset_questions": 1, "subset_images": 1},
    {"subset_questions": 2.5}, {"mode": "both"}, {"caption_policy": "shortest"}, {"answer_policy": "first"},
    {"mixed_sit_fraction": 1.5}, {"mixed_sit_fraction": "0.5"}, {"subset_seed": "0"}, {"subset_seed": -1}, {"templates": {"sit_target": "x"}},
])
def test_invalid_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        JoinOptions(**options)


# --- drops, counted by reason ---------------------------------------------------------------------------


def test_drops_are_counted_by_reason_with_examples(official_data, write_official):
    official_data["annotations"]["annotations"] = [
        a for a in official_data["annotations"]["annotations"] if a["question_id"] != 9001]
    official_data["captions"]["annotations"] = [
        c for c in official_data["captions"]["annotations"] if c["image_id"] != 30]
    extra = dict(official_data["annotations"]["annotations"][0], question_id=123, image_id=9)
    official_data["annotations"]["annotations"].append(extra)
    records, report = run_join(write_official(official_data))
    assert [r["question_id"] for r in records] == [9000, 9002, 25000, 25001]
    assert report.dropped == {"no_annotation": 1, "no_caption": 1, "image_missing": 0, "image_unreadable": 0}
    assert report.drop_examples == {"no_annotation": ["question_id 9001"], "no_caption": ["question_id 30000"]}
    assert report.annotations_without_question == 1
    assert (report.questions_read, report.joined, report.questions_written) == (6, 4, 4)
    assert "no_annotation 1, no_caption 1" in report.summary()


def test_image_check_drops_missing_and_corrupt_files(official_files):
    (official_files.image_dir / image_name(25)).unlink()
    (official_files.image_dir / image_name(30)).write_bytes(b"not a jpeg at all")
    unchecked, report = run_join(official_files)
    assert len(unchecked) == 6 and report.images_checked is None  # without the check nothing is dropped
    assert report.image_files_missing_unchecked == 1  # ... but the missing file is counted and reported
    assert "1 image files do not exist" in report.summary()
    records, report = run_join(official_files, check_images=True)
    assert [r["question_id"] for r in records] == [9000, 9001, 9002]
    assert report.dropped == {"no_annotation": 0, "no_caption": 0, "image_missing": 2, "image_unreadable": 1}
    directory = official_files.image_dir.resolve()
    assert report.drop_examples["image_missing"] == [str(directory / image_name(25))]
    assert report.drop_examples["image_unreadable"][0].startswith(str(directory / image_name(30)))
    assert report.images_checked == 3 and report.images_written == 1


def test_image_check_catches_a_truncated_jpeg(official_files):
    path = official_files.image_dir / image_name(9)
    from PIL import Image

    Image.effect_noise((64, 64), 60).convert("RGB").save(path, "JPEG", quality=95)
    path.write_bytes(path.read_bytes()[:400])
    records, report = run_join(official_files, check_images=True)
    assert report.dropped["image_unreadable"] == 3
    assert {r["image_id"] for r in records} == {25, 30}


def test_report_counts_add_up(official_data, write_official):
    official_data["annotations"]["annotations"].pop(0)
    files = write_official(official_data)
    (files.image_dir / image_name(30)).unlink()
    _, report = run_join(files, subset_questions=4, subset_seed=1, check_images=True)
    dropped = report.dropped
    assert report.questions_read == report.joined + dropped["no_annotation"] + dropped["no_caption"]
    assert report.joined == report.selected + report.not_selected
    assert report.selected == report.questions_written + dropped["image_missing"] + dropped["image_unreadable"]
    assert report.records_total == sum(report.records.values())


# --- inputs that do not fit together ----------------------------------------------------------------------


def test_annotations_of_another_split_are_an_error(official_data, write_official):
    official_data["annotations"]["data_subtype"] = "val2014"
    files = write_official(official_data)
    with pytest.raises(DataError, match="is for train2014 but the annotations file .* is for val2014"):
        run_join(files)


def test_annotations_that_match_no_question_are_an_error(official_data, write_official):
    for annotation in official_data["annotations"]["annotations"]:
        annotation["question_id"] += 1_000_000
    files = write_official(official_data)
    with pytest.raises(DataError) as error:
        run_join(files)
    assert "none of the 6 questions" in str(error.value) and str(files.annotations) in str(error.value)


def test_annotation_about_another_image_is_an_error(official_data, write_official):
    official_data["annotations"]["annotations"][4]["image_id"] = 30
    files = write_official(official_data)
    with pytest.raises(DataError, match=r"question_id 25001 is about image 25 .*\$\.questions\[4\].* image 30"):
        run_join(files)


def test_captions_of_other_images_are_an_error(official_data, write_official):
    for caption in official_data["captions"]["annotations"]:
        caption["image_id"] += 1
    with pytest.raises(DataError, match="none of the questions with an annotation has a caption"):
        run_join(write_official(official_data))


def test_missing_image_directory_is_an_error(official_files, tmp_path):
    files = type(official_files)(*official_files.args()[:3], tmp_path / "no_such_dir")
    with pytest.raises(DataError, match="image directory not found: .*no_such_dir"):
        run_join(files)


def test_no_image_left_is_an_error(official_files):
    for name in os.listdir(official_files.image_dir):
        (official_files.image_dir / name).unlink()
    with pytest.raises(DataError, match="no questions left .* check --image-dir"):
        run_join(official_files, check_images=True)


def test_fallback_file_name_uses_the_questions_split(official_data, write_official):
    for image in official_data["captions"]["images"]:
        del image["file_name"]
    files = write_official(official_data)
    records, _ = run_join(files, check_images=True)
    assert len(records) == 6 and records[0]["image_path"].endswith("COCO_train2014_000000000009.jpg")


# --- on disk: prepare_dataset, load_prepared, prepare_cached ----------------------------------------------


def test_prepare_dataset_writes_the_dataset_and_report(official_files, tmp_path):
    out = tmp_path / "prepared"
    dataset, report = prepare_dataset(*official_files.args(), out, JoinOptions(mode="mixed"))
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.column_names == list(COLUMNS) and dataset.num_rows == 12
    assert dataset.features["answers"] == datasets.List(datasets.Value("string"))
    assert dataset.features["question_id"] == datasets.Value("int64")
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved == report.to_dict()
    assert saved["mode"] == "mixed" and saved["records"] == {"baseline": 6, "sit": 6}
    assert saved["options"]["templates"]["sit_target"] == "Description: {caption}\nAnswer: {answer}"
    assert saved["inputs"]["questions"] == str(official_files.questions.resolve())
    reloaded, reloaded_report = load_prepared(out)
    assert reloaded.to_list() == dataset.to_list() and reloaded_report == report
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_prepare_dataset_replaces_a_prepared_directory_but_nothing_else(official_files, tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(*official_files.args(), out, JoinOptions(mode="sit"))
    dataset, _ = prepare_dataset(*official_files.args(), out, JoinOptions(mode="baseline"))
    assert set(dataset["kind"]) == {"baseline"}
    other = tmp_path / "my_notes"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared dataset .* refusing to overwrite"):
        prepare_dataset(*official_files.args(), other, JoinOptions())
    assert (other / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_dataset(*official_files.args(), empty, JoinOptions())[0].num_rows == 6


def test_a_crash_while_writing_leaves_no_half_dataset(official_files, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_dataset(*official_files.args(), out, JoinOptions(mode="sit"))
    real_save = datasets.Dataset.save_to_disk

    def save_then_crash(self, path, **kwargs):
        real_save(self, path, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(*official_files.args(), out, JoinOptions(mode="baseline"))
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(*official_files.args(), tmp_path / "fresh", JoinOptions())
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists()
    assert set(load_prepared(out)[0]["kind"]) == {"sit"}  # the previous dataset is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "prepared"]


def test_bad_input_writes_nothing(official_files, tmp_path):
    official_files.annotations.write_text("{not json")
    with pytest.raises(DataError):
        prepare_dataset(*official_files.args(), tmp_path / "out", JoinOptions())
    assert not (tmp_path / "out").exists()


def test_load_prepared_explains_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="not a prepared dataset .*python -m sit_vqa.apps.prepare"):
        load_prepared(tmp_path)
    (tmp_path / REPORT_FILE).write_text("{}")
    with pytest.raises(DataError, match="damaged"):
        load_prepared(tmp_path)


def test_prepare_cached_reuses_the_same_inputs_and_options(official_files, tmp_path, caplog):
    cache = tmp_path / "cache"
    options = JoinOptions(mode="sit", subset_questions=4)
    first, report = prepare_cached(*official_files.args(), cache, options)
    (directory,) = cache.iterdir()
    stamp = (directory / REPORT_FILE).stat().st_mtime_ns
    with caplog.at_level("INFO", logger="sit_vqa.data.prepared"):
        second, second_report = prepare_cached(*official_files.args(), cache,
                                               JoinOptions(mode="sit", subset_questions=4))
    assert "reusing" in caplog.text
    assert (directory / REPORT_FILE).stat().st_mtime_ns == stamp
    assert second.to_list() == first.to_list() and second_report == report

    prepare_cached(*official_files.args(), cache, JoinOptions(mode="baseline", subset_questions=4))
    assert len(list(cache.iterdir())) == 2  # other options, other entry


def test_cache_key_follows_file_identity_and_options(official_files):
    key = cache_key(*official_files.args(), JoinOptions())
    assert key == cache_key(*official_files.args(), JoinOptions())
    assert key != cache_key(*official_files.args(), JoinOptions(subset_seed=1))
    assert key != cache_key(*official_files.args(), JoinOptions(templates=Templates(baseline_target="A: {answer}")))
    stat = official_files.captions.stat()
    os.utime(official_files.captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert key != cache_key(*official_files.args(), JoinOptions())


def test_report_round_trips_through_json(official_files):
    _, report = run_join(official_files, mode="multitask")
    assert JoinReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    summary = report.summary()
    assert "questions read 6, joined 6" in summary and "baseline 6, describe 3" in summary


def test_a_wrong_image_directory_is_an_error_even_without_the_image_check(official_files, tmp_path):
    empty = tmp_path / "not_the_images"
    empty.mkdir()
    questions, annotations, captions, _ = official_files.args()
    with pytest.raises(DataError, match=r"none of the 3 image files exist in .*not_the_images.*COCO_"):
        join_records(read_questions(questions), read_annotations(annotations), load_captions(captions), empty,
                     JoinOptions())
