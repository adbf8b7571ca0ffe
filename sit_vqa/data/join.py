"""Join VQAv2 questions with their images' COCO captions, build baseline / SIT / multitask records, save them.

Every question is kept with its image's captions -- all questions of an image, never one per image (the
paper's released code joined through a dict keyed by image, so one question and one caption per image
survived). Steps, each deterministic for a given seed:

1. read questions, annotations (`vqav2`) and captions (`coco`, through pycocotools' COCO API);
2. join on question_id (annotations) and image_id (captions); questions without an annotation or without a
   caption are dropped and counted by reason in the join report;
3. optional subset: `subset_questions` (a seeded sample of the joined questions) or `subset_images` (a seeded
   sample of their images, with all their questions);
4. optional image check (`check_images`): the selected questions whose image file is missing or cannot be
   decoded are dropped and counted;
5. captions per question by `caption_policy`:
   `first` (file order), `random` (seeded, per question), `longest` (most characters, first on ties), or
   `all` (one record per caption);
6. records by `mode` (the `mode` column holds each record's kind: "baseline", "sit" or "describe"):
   - `baseline`: one baseline record per question (and caption, for `all`): target = the answer;
   - `sit`: one SIT record: target = "Description: <caption>\\nAnswer: <answer>";
   - `mixed`: every question's baseline record, plus its SIT record for a seeded fraction
     `mixed_sit_fraction` of the questions (1.0, the default: both forms of every question);
   - `multitask`: the baseline records plus one "Describe the image" record per image (per caption for
     `all`) whose target is the caption -- the same supervision as SIT, but not in sequence.
   Describe records have question_id -1 (`DESCRIBE_QUESTION_ID`), empty question/answer/answer_type/
   question_type and no answers; evaluation filters them out by `mode == "describe"`.
   Records come grouped by kind (baseline, then sit, then describe); within a kind, questions keep their
   file order (captions theirs, for `all`) and describe records follow image ids.

Targets keep their markers and punctuation exactly; captions only have their whitespace normalised (`coco`).
Every record keeps all the annotators' answers, answer_type and question_type for evaluation.
`prepare_dataset` writes the table (HF `datasets`, Arrow) and `join_report.json` into a directory atomically;
`prepare_cached` does the same under a cache directory keyed by the inputs' identity and the options.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import string
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sit_vqa import __version__
from sit_vqa.data.coco import CocoCaptions, load_captions
from sit_vqa.data.templates import TEMPLATE_FIELDS, Templates
from sit_vqa.data.vqav2 import ANSWER_POLICIES, VqaAnnotations, VqaQuestions, read_annotations, read_questions
from sit_vqa.errors import ConfigError, DataError
from sit_vqa.gc_pause import gc_paused

logger = logging.getLogger(__name__)

MODES = ("baseline", "sit", "mixed", "multitask")
CAPTION_POLICIES = ("first", "random", "longest", "all")
DROP_REASONS = ("no_annotation", "no_caption", "image_missing", "image_unreadable")
DESCRIBE_QUESTION_ID = -1
REPORT_FILE = "join_report.json"
COLUMNS = ("question_id", "image_id", "image_path", "question", "caption", "answer", "answers", "answer_type",
           "question_type", "instruction", "target", "mode")
FORMAT_VERSION = 1  # bump when the records change, so cached datasets are rebuilt
_EXAMPLES_PER_REASON = 5
# Independent random streams per step, so changing one option never reshuffles another step.
_SUBSET_STREAM, _CAPTION_STREAM, _MIXED_STREAM, _DESCRIBE_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class JoinOptions:
    """How to join and which records to build. Validated on creation; never mutated."""

    mode: str = "sit"
    caption_policy: str = "first"
    answer_policy: str = "multiple_choice_answer"  # or "most_frequent" (ties -> lexicographically smallest)
    subset_questions: int | None = None
    subset_images: int | None = None
    seed: int = 0
    check_images: bool = False
    mixed_sit_fraction: float = 1.0  # mode "mixed": share of questions that also get their SIT record (seeded)
    templates: Templates = field(default_factory=Templates)

    def __post_init__(self):
        _check_choice("mode", self.mode, MODES)
        _check_choice("caption_policy", self.caption_policy, CAPTION_POLICIES)
        _check_choice("answer_policy", self.answer_policy, ANSWER_POLICIES)
        if self.subset_questions is not None and self.subset_images is not None:
            raise ConfigError("choose subset_questions or subset_images, not both")
        for name in ("subset_questions", "subset_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer (or None for everything), got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        fraction = self.mixed_sit_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"mixed_sit_fraction must be within [0, 1], got {self.mixed_sit_fraction!r}")
        if not isinstance(self.templates, Templates):
            raise ConfigError(f"templates must be a sit_vqa.data.templates.Templates, got {type(self.templates)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; expected one of: {', '.join(choices)}")


@dataclass
class JoinReport:
    """What the join read, dropped (by reason, in questions) and wrote. Saved as join_report.json.

    The counts add up: questions_read = joined + dropped[no_annotation] + dropped[no_caption];
    joined = selected + not_selected; selected = questions_written + dropped[image_missing] + dropped[image_unreadable].
    """

    mode: str
    split: str | None
    inputs: dict[str, str]
    options: dict
    questions_read: int = 0
    annotations_read: int = 0
    annotations_without_question: int = 0
    captions_read: int = 0
    captioned_images: int = 0
    blank_captions_skipped: int = 0
    joined: int = 0
    subset: dict | None = None
    not_selected: int = 0
    selected: int = 0
    images_checked: int | None = None
    image_files_missing_unchecked: int | None = None  # without check_images: kept, but counted and warned about
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    drop_examples: dict[str, list] = field(default_factory=dict)
    questions_written: int = 0
    images_written: int = 0
    records: dict[str, int] = field(default_factory=dict)
    records_total: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JoinReport:
        if not isinstance(data, dict):
            raise ValueError(f"a join report is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def summary(self) -> str:
        dropped = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items())
        subset = "all joined questions"
        if self.subset:
            subset = (f"{self.subset['requested']} {self.subset['by']} (seed {self.subset['seed']}): "
                      f"{self.selected} questions")
        images = "off" if self.images_checked is None else f"{self.images_checked} image files checked"
        if self.image_files_missing_unchecked:
            images += (f" ({self.image_files_missing_unchecked} image files do not exist; their questions are kept: "
                       "use --check-images / check_images to drop them)")
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.records.items())
        return (
            f"VQAv2 x COCO join ({self.split or 'unknown split'}, mode {self.mode}):\n"
            f"  questions read {self.questions_read}, joined {self.joined}, "
            f"annotations without a question {self.annotations_without_question}\n"
            f"  subset: {subset}; image check: {images}\n"
            f"  dropped questions: {dropped}\n"
            f"  written: {self.records_total} records ({kinds}) for {self.questions_written} questions "
            f"over {self.images_written} images"
        )


def join_records(
    questions: VqaQuestions,
    annotations: VqaAnnotations,
    captions: CocoCaptions,
    image_dir: str | Path,
    options: JoinOptions,
) -> tuple[pa.Table, JoinReport]:
    """The join, in memory: an Arrow table with `COLUMNS` (records grouped by kind: baseline, sit,
    describe; questions in file order within a kind, describe records by image id) and the report."""
    _check_same_split(questions, annotations)
    image_dir = _require_image_dir(image_dir)
    report = JoinReport(
        mode=options.mode,
        split=questions.split,
        inputs={"questions": str(questions.path.resolve()), "annotations": str(annotations.path.resolve()),
                "captions": str(captions.path.resolve()), "image_dir": str(image_dir.resolve())},
        options=options.to_dict(),
        questions_read=questions.table.num_rows,
        annotations_read=annotations.table.num_rows,
        captions_read=captions.captions_read,
        captioned_images=len(captions.by_image),
        blank_captions_skipped=captions.blank_captions,
    )
    rows, annotation_rows = _join(questions, annotations, captions, report)
    rows = _select_subset(rows, questions.table["image_id"].to_numpy()[rows], options, report)
    joined = _joined_table(questions, annotations, annotation_rows, rows)
    images = _ImageBank.of(joined, captions, questions.split, image_dir.resolve())
    if options.check_images:
        joined = _drop_bad_images(joined, images, report)
        images = _ImageBank.of(joined, captions, questions.split, image_dir.resolve())
    else:
        _count_missing_images(images, image_dir, report)

    tables = _question_records(joined, images, options)
    if options.mode == "multitask":
        tables["describe"] = _describe_records(images, options)
    report.questions_written = joined.num_rows
    report.images_written = len(images.image_ids)
    report.records = {kind: table.num_rows for kind, table in tables.items()}
    report.records_total = sum(report.records.values())
    return pa.concat_tables(tables.values()), report


def _require_image_dir(image_dir: str | Path) -> Path:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"image directory not found: {image_dir} (pass the folder holding the COCO images of "
                        f"the questions' split, e.g. train2014/)")
    return image_dir


def _check_same_split(questions: VqaQuestions, annotations: VqaAnnotations) -> None:
    if questions.split and annotations.split and questions.split != annotations.split:
        raise DataError(
            f"the questions file {questions.path} is for {questions.split} but the annotations file "
            f"{annotations.path} is for {annotations.split}; pass the two files of the same split"
        )


def _join(questions: VqaQuestions, annotations: VqaAnnotations, captions: CocoCaptions, report: JoinReport):
    """Indices of the questions that have an annotation and captions, and of their annotations."""
    question_ids = questions.table["question_id"]
    image_ids = questions.table["image_id"]
    annotation_rows = pc.index_in(question_ids, value_set=annotations.table["question_id"])  # null: none
    has_annotation = pc.is_valid(annotation_rows).to_numpy()
    if not has_annotation.any():
        raise DataError(
            f"none of the {len(question_ids)} questions in {questions.path} has an annotation in "
            f"{annotations.path}; pass the annotations file of the same split and version"
        )
    _check_image_ids_agree(questions, annotations, annotation_rows)
    captioned = pa.array(list(captions.by_image), pa.int64())
    has_caption = pc.is_in(image_ids, value_set=captioned).to_numpy()
    used_annotations = pc.is_in(annotations.table["question_id"], value_set=question_ids)
    report.annotations_without_question = report.annotations_read - pc.sum(used_annotations).as_py()

    _count_drops(report, "no_annotation", ~has_annotation, question_ids)
    _count_drops(report, "no_caption", has_annotation & ~has_caption, question_ids)
    rows = np.flatnonzero(has_annotation & has_caption)
    report.joined = len(rows)
    if not len(rows):
        raise DataError(
            f"none of the questions with an annotation has a caption in {captions.path}: the images "
            f"of {questions.path} are not in that captions file; pass captions_<split>.json of the same split"
        )
    return rows, pc.fill_null(annotation_rows, -1).to_numpy()


def _check_image_ids_agree(questions: VqaQuestions, annotations: VqaAnnotations, annotation_rows) -> None:
    annotated_image = pc.take(annotations.table["image_id"], annotation_rows)
    disagree = pc.fill_null(pc.not_equal(annotated_image, questions.table["image_id"]), False)
    if pc.any(disagree).as_py():
        index = int(np.flatnonzero(disagree.to_numpy())[0])
        question_id = questions.table["question_id"][index].as_py()
        raise DataError(
            f"question_id {question_id} is about image {questions.table['image_id'][index].as_py()} in "
            f"{questions.path} ($.questions[{index}]) but about image {annotated_image[index].as_py()} in "
            f"{annotations.path}; the annotations do not match the questions (pass both files of one split)"
        )


def _count_drops(report: JoinReport, reason: str, mask: np.ndarray, question_ids) -> None:
    report.dropped[reason] += int(mask.sum())
    if mask.any():
        examples = question_ids.take(np.flatnonzero(mask)[:_EXAMPLES_PER_REASON]).to_pylist()
        report.drop_examples[reason] = [f"question_id {question_id}" for question_id in examples]


def _select_subset(rows: np.ndarray, image_ids: np.ndarray, options: JoinOptions, report: JoinReport) -> np.ndarray:
    """A seeded sample of the joined questions, or of their images with all their questions; file order kept."""
    rng = np.random.default_rng([options.seed, _SUBSET_STREAM])
    if options.subset_questions is not None:
        wanted, available, by = options.subset_questions, len(rows), "questions"
        if wanted > available:
            raise _subset_error(wanted, available, by, report)
        rows = rows[np.sort(rng.choice(available, size=wanted, replace=False))]
    elif options.subset_images is not None:
        unique_images = np.unique(image_ids)
        wanted, available, by = options.subset_images, len(unique_images), "images"
        if wanted > available:
            raise _subset_error(wanted, available, by, report)
        chosen = unique_images[rng.choice(available, size=wanted, replace=False)]
        rows = rows[np.isin(image_ids, chosen)]
    else:
        report.selected = len(rows)
        return rows
    report.subset = {"by": by, "requested": wanted, "available": available, "seed": options.seed}
    report.selected = len(rows)
    report.not_selected = report.joined - len(rows)
    return rows


def _subset_error(wanted: int, available: int, by: str, report: JoinReport) -> DataError:
    return DataError(
        f"asked for a subset of {wanted} {by} but only {available} {by} have both an annotation and a caption "
        f"(questions read {report.questions_read}, dropped {report.dropped}); ask for at most {available}, "
        f"or leave the subset out to use them all"
    )


def _joined_table(questions: VqaQuestions, annotations: VqaAnnotations, annotation_rows, rows) -> pa.Table:
    """One row per selected question: the question's columns and its annotation's."""
    picked = questions.table.take(rows)
    annotation = annotations.table.take(annotation_rows[rows])
    for name in ("answer", "answers", "answer_type", "question_type"):
        picked = picked.append_column(name, annotation[name])
    return picked


@dataclass(frozen=True)
class _ImageBank:
    """The images of the joined questions (sorted ids), their absolute paths and their captions, flattened:
    image i's captions are captions[offsets[i]:offsets[i + 1]]; by_question[j] is question row j's image."""

    image_ids: np.ndarray
    paths: pa.Array
    captions: pa.Array
    offsets: np.ndarray
    by_question: np.ndarray

    @classmethod
    def of(cls, joined: pa.Table, captions: CocoCaptions, split: str | None, image_dir: Path) -> _ImageBank:
        image_ids, by_question = np.unique(joined["image_id"].to_numpy(), return_inverse=True)
        texts, counts, paths = [], [], []
        directory = str(image_dir)  # os.path.join: pathlib costs seconds over VQAv2's 82k train images
        for image_id in image_ids.tolist():
            image_captions = captions.by_image[image_id]
            texts.extend(image_captions)
            counts.append(len(image_captions))
            paths.append(os.path.join(directory, captions.file_name(image_id, split)))
        offsets = np.zeros(len(image_ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(image_ids, pa.array(paths, pa.string()), pa.array(texts, pa.string()), offsets, by_question)

    def longest_captions(self) -> np.ndarray:
        """Per image, the index (in `captions`) of its longest caption; the first one on ties."""
        lengths = pc.utf8_length(self.captions).to_numpy()
        bounds = zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)
        return np.array([start + int(np.argmax(lengths[start:end])) for start, end in bounds], dtype=np.int64)


def _count_missing_images(images: _ImageBank, image_dir: Path, report: JoinReport) -> None:
    """Without check_images, a cheap existence check (a stat per image, ~0.4 s for VQAv2 train): a wrong image
    directory is an error at once, not a failure hours into training; a few missing files are counted."""
    paths = images.paths.to_pylist()
    missing = len(paths) - sum(_existing(paths, image_dir))
    if paths and missing == len(paths):
        raise DataError(
            f"none of the {len(paths)} image files exist in {image_dir} (e.g. {paths[0]}); pass the directory that "
            "holds the images named in the captions file's file_name (COCO 2014: COCO_train2014_000000000009.jpg)"
        )
    report.image_files_missing_unchecked = missing
    if missing:
        logger.warning("%d of %d image files do not exist in %s; their questions are kept (training would fail on "
                       "them): use --check-images / check_images to drop and count them", missing, len(paths), image_dir)


def _existing(paths: list[str], image_dir: Path) -> list[bool]:
    """Which paths are files. One directory listing instead of a stat per image (0.09 s against 0.26 s for
    VQAv2 train's 82,783 images); paths outside the directory itself are stat-ed."""
    directory = str(image_dir.resolve()) + os.sep
    listed = {entry.name for entry in os.scandir(image_dir) if entry.is_file()}
    return [
        path[len(directory):] in listed if path.startswith(directory) and os.sep not in path[len(directory):]
        else os.path.isfile(path)
        for path in paths
    ]


def _drop_bad_images(joined: pa.Table, images: _ImageBank, report: JoinReport) -> pa.Table:
    """Drop the questions whose image file is missing or cannot be decoded; count them by reason."""
    problems = np.full(len(images.image_ids), "", dtype=object)
    examples: dict[str, list[str]] = {"image_missing": [], "image_unreadable": []}
    for index, path in enumerate(images.paths.to_pylist()):
        if not os.path.isfile(path):
            reason, example = "image_missing", path
        else:
            error = _unreadable_reason(path)
            if error is None:
                continue
            reason, example = "image_unreadable", f"{path} ({error})"
        problems[index] = reason
        if len(examples[reason]) < _EXAMPLES_PER_REASON:
            examples[reason].append(example)
    report.images_checked = len(images.image_ids)
    question_problems = problems[images.by_question]
    for reason, reason_examples in examples.items():
        report.dropped[reason] += int((question_problems == reason).sum())
        if reason_examples:
            report.drop_examples[reason] = reason_examples
    kept = joined.filter(pa.array(question_problems == ""))
    if kept.num_rows == 0:
        example = (examples["image_missing"] + examples["image_unreadable"])[0]
        raise DataError(
            f"no questions left after dropping those with bad image files (image_missing "
            f"{report.dropped['image_missing']}, image_unreadable {report.dropped['image_unreadable']} questions), "
            f"e.g. {example}; check --image-dir: it should hold the images named in the captions file"
        )
    return kept


def _unreadable_reason(path: str) -> str | None:
    """Why an image file cannot be decoded, or None when it can."""
    from PIL import Image  # only needed with check_images

    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale -- still reads the whole stream
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _choose_captions(image_index: np.ndarray, images: _ImageBank, policy: str, rng: np.random.Generator):
    """Captions for items that show images `image_index` (question rows, or the images themselves).

    Returns (owner, caption): for each chosen caption, the item it belongs to (items repeat under `all`)
    and its index in images.captions.
    """
    starts = images.offsets[image_index]
    counts = images.offsets[image_index + 1] - starts
    if policy == "all":
        owner = np.repeat(np.arange(len(image_index)), counts)
        position = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, starts[owner] + position
    owner = np.arange(len(image_index))
    if policy == "first":
        return owner, starts
    if policy == "longest":
        return owner, images.longest_captions()[image_index]
    return owner, starts + (rng.random(len(image_index)) * counts).astype(np.int64)


def _question_records(joined: pa.Table, images: _ImageBank, options: JoinOptions) -> dict[str, pa.Table]:
    """The baseline and/or SIT records of the joined questions, by kind."""
    rng = np.random.default_rng([options.seed, _CAPTION_STREAM])
    owner, caption = _choose_captions(images.by_question, images, options.caption_policy, rng)
    pairs = joined.take(owner) if options.caption_policy == "all" else joined  # else owner is the identity
    pairs = pairs.append_column("image_path", images.paths.take(images.by_question[owner]))
    pairs = pairs.append_column("caption", images.captions.take(caption))
    if options.mode == "sit":
        return {"sit": _with_targets("sit", pairs, options.templates)}
    records = {"baseline": _with_targets("baseline", pairs, options.templates)}
    if options.mode == "mixed":
        rng = np.random.default_rng([options.seed, _MIXED_STREAM])
        count = joined.num_rows
        with_sit = rng.choice(count, size=round(options.mixed_sit_fraction * count), replace=False)
        records["sit"] = _with_targets("sit", pairs.take(np.flatnonzero(np.isin(owner, with_sit))), options.templates)
    return records


def _describe_records(images: _ImageBank, options: JoinOptions) -> pa.Table:
    """One "Describe the image" record per image (per caption for `all`)."""
    rng = np.random.default_rng([options.seed, _DESCRIBE_STREAM])
    owner, caption = _choose_captions(np.arange(len(images.image_ids)), images, options.caption_policy, rng)
    count = len(owner)
    empty = pa.repeat("", count)
    records = pa.table({
        "question_id": np.full(count, DESCRIBE_QUESTION_ID, dtype=np.int64),
        "image_id": images.image_ids[owner],
        "question": empty,
        "answer": empty,
        "answers": pa.ListArray.from_arrays(pa.array(np.zeros(count + 1, dtype=np.int32)), pa.array([], pa.string())),
        "answer_type": empty,
        "question_type": empty,
        "image_path": images.paths.take(owner),
        "caption": images.captions.take(caption),
    })
    return _with_targets("describe", records, options.templates)


def _with_targets(kind: str, records: pa.Table, templates: Templates) -> pa.Table:
    """records plus instruction, target and mode (= kind), in `COLUMNS` order."""
    instruction = _format_column(getattr(templates, f"{kind}_instruction"), records)
    target = _format_column(getattr(templates, f"{kind}_target"), records)
    records = records.append_column("instruction", instruction).append_column("target", target)
    return records.append_column("mode", pa.repeat(kind, records.num_rows)).select(list(COLUMNS))


def _format_column(template: str, records: pa.Table):
    """`template.format(question=..., caption=..., answer=...)` for every row, computed column-wise by Arrow
    (the same strings as Templates.render, which the tests check, at a fraction of the cost)."""
    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if spec or conversion:  # rare: let Python apply the format spec
            rows = records.select(list(TEMPLATE_FIELDS)).to_pylist()
            return pa.array([template.format(**row) for row in rows], pa.string())
        if literal:
            parts.append(literal)
        if name is not None:
            parts.append(records[name])
    if not any(isinstance(part, pa.ChunkedArray) for part in parts):
        return pa.repeat("".join(parts), records.num_rows)
    return pc.binary_join_element_wise(*parts, "")


def prepare_dataset(
    questions_path: str | Path,
    annotations_path: str | Path,
    captions_path: str | Path,
    image_dir: str | Path,
    out_dir: str | Path,
    options: JoinOptions | None = None,
):
    """Read, join and build the records, then write `out_dir` atomically: the `datasets` table
    (`save_to_disk`) and join_report.json. Returns (datasets.Dataset loaded from out_dir, JoinReport).

    An existing `out_dir` is replaced only when it is empty or a previously prepared dataset.
    """
    options = options or JoinOptions()
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    _require_image_dir(image_dir)  # before the (long) read
    with gc_paused():
        questions = read_questions(questions_path)
        annotations = read_annotations(annotations_path, options.answer_policy)
        captions = load_captions(captions_path)
        table, report = join_records(questions, annotations, captions, image_dir, options)
        del questions, annotations, captions  # free the inputs before writing
    _save_atomically(table, report, out_dir)
    logger.info("%s\n  saved to %s", report.summary(), out_dir)
    return load_prepared(out_dir)


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output path {out_dir} is a file; pass a directory for the prepared dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / REPORT_FILE).is_file():
        raise DataError(
            f"output directory {out_dir} exists and is not a prepared dataset (no {REPORT_FILE}); "
            f"refusing to overwrite it: pass a new or empty directory"
        )


def _save_atomically(table: pa.Table, report: JoinReport, out_dir: Path) -> None:
    """Write into a temporary sibling directory, then rename it into place: a crash never leaves a
    half-written dataset under out_dir."""
    import datasets  # heavy import, only needed here

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.partial"
    staging.mkdir()  # (not mkdtemp: its 0700 mode would stick to the dataset directory)
    try:
        # An explicit fingerprint: otherwise datasets hashes the whole in-memory table to make one.
        fingerprint = hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        datasets.Dataset(table, fingerprint=fingerprint).save_to_disk(str(staging))
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if out_dir.exists():
            previous = staging.with_suffix(".previous")
            os.rename(out_dir, previous)
            os.rename(staging, out_dir)
            shutil.rmtree(previous)
        else:
            os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_prepared(directory: str | Path):
    """Open a prepared dataset directory (memory-mapped): returns (datasets.Dataset, JoinReport)."""
    import datasets

    directory = Path(directory)
    report_path = directory / REPORT_FILE
    if not report_path.is_file():
        raise DataError(
            f"{directory} is not a prepared dataset (no {REPORT_FILE}); create it with "
            f"`python -m sit_vqa.prepare ... --out {directory}`"
        )
    try:
        report = JoinReport.from_dict(json.loads(report_path.read_text()))
        dataset = datasets.load_from_disk(str(directory))
    except (ValueError, TypeError, OSError) as error:
        raise DataError(f"{directory}: the prepared dataset is damaged ({error}); prepare it again") from None
    missing = set(COLUMNS) - set(dataset.column_names)
    if missing:
        raise DataError(f"{directory}: the prepared dataset lacks columns {sorted(missing)}; prepare it again")
    return dataset, report


def cache_key(questions_path, annotations_path, captions_path, image_dir, options: JoinOptions) -> str:
    """A hash of the inputs' identity (resolved path, size, mtime_ns), the options and the record format."""
    inputs = {name: _file_identity(Path(path)) for name, path in
              (("questions", questions_path), ("annotations", annotations_path), ("captions", captions_path))}
    image_dir = Path(image_dir).resolve()
    # The image paths embed the directory; with image checks its contents matter too (mtime changes with them).
    inputs["image_dir"] = [str(image_dir), image_dir.stat().st_mtime_ns if options.check_images else None]
    payload = {"format": FORMAT_VERSION, "version": __version__, "inputs": inputs, "options": options.to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _file_identity(path: Path) -> list:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"input file not found: {path}") from None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def prepare_cached(
    questions_path: str | Path,
    annotations_path: str | Path,
    captions_path: str | Path,
    image_dir: str | Path,
    cache_root: str | Path,
    options: JoinOptions | None = None,
):
    """`prepare_dataset` into cache_root/<cache_key>, or reuse that directory when it exists.
    Returns (datasets.Dataset, JoinReport)."""
    options = options or JoinOptions()
    image_dir = _require_image_dir(image_dir)
    out_dir = Path(cache_root) / cache_key(questions_path, annotations_path, captions_path, image_dir, options)
    if (out_dir / REPORT_FILE).is_file():
        logger.info("reusing the prepared dataset in %s (same inputs and options)", out_dir)
        return load_prepared(out_dir)
    return prepare_dataset(questions_path, annotations_path, captions_path, image_dir, out_dir, options)
