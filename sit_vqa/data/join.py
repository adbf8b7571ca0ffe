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
6. records by `mode` (the recipe; the `kind` column holds each record's kind: "baseline", "sit" or "describe"):
   - `baseline`: one baseline record per question (and caption, for `all`): target = the answer;
   - `sit`: one SIT record: target = "Description: <caption>\\nAnswer: <answer>";
   - `mixed`: every question's baseline record, plus its SIT record for a seeded fraction
     `mixed_sit_fraction` of the questions (1.0, the default: both forms of every question);
   - `multitask`: the baseline records plus one "Describe the image" record per image (per caption for
     `all`) whose target is the caption -- the same supervision as SIT, but not in sequence.
   Describe records have question_id -1 (`DESCRIBE_QUESTION_ID`), empty question/answer/answer_type/
   question_type and no answers; evaluation filters them out by `kind == "describe"`.
   Records come grouped by kind (baseline, then sit, then describe); within a kind, questions keep their
   file order (captions theirs, for `all`) and describe records follow image ids.

Targets keep their markers and punctuation exactly; captions only have their whitespace normalised (`coco`).
Every record keeps all the annotators' answers, answer_type and question_type for evaluation.
Saving the records to disk (and the cache train.py uses) is `sit_vqa.data.prepared`; the image-file checks are
`sit_vqa.data.image_check`.
"""

from __future__ import annotations

import functools
import logging
import os
import string
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sit_vqa.data.coco import CocoCaptions
from sit_vqa.data.image_check import (
    EXAMPLES_PER_REASON,
    count_missing_images,
    drop_bad_images,
)
from sit_vqa.data.prompts import (
    POOL_TASKS,
    TEMPLATE_FIELDS,
    TEMPLATE_KEYS,
    InstructionPool,
    Templates,
    load_instruction_pool,
    load_templates,
)
from sit_vqa.data.vqav2 import (
    ANSWER_POLICIES,
    VqaAnnotations,
    VqaQuestions,
)
from sit_vqa.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DROP_REASONS = ("no_annotation", "no_caption", "image_missing", "image_unreadable")
DESCRIBE_QUESTION_ID = -1
DESCRIBE_KIND = "describe"  # the `kind` of the multitask control's "Describe the image" records
COLUMNS = ("question_id", "image_id", "image_path", "question", "caption", "answer", "answers", "answer_type",
           "question_type", "instruction", "target", "kind", "instruction_variant")
DEFAULT_VARIANT = -1  # instruction_variant of a record asked with the templates' own phrasing (no pool)
FORMAT_VERSION = 3  # bump when the records change, so cached datasets are rebuilt
# Independent random streams per step, so changing one option never reshuffles another step.
_SUBSET_STREAM, _CAPTION_STREAM, _MIXED_STREAM, _DESCRIBE_STREAM, _PHRASING_STREAM = 0, 1, 2, 3, 4


Mode = Literal["sit", "baseline", "mixed", "multitask"]
CaptionPolicy = Literal["first", "random", "longest", "all"]
AnswerPolicy = Literal["multiple_choice_answer", "most_frequent"]
MODES: tuple[str, ...] = typing.get_args(Mode)
# the record kinds each mode writes (each needs its phrasings in an instruction pool)
MODE_KINDS = {"sit": ("sit",), "baseline": ("baseline",), "mixed": ("baseline", "sit"),
              "multitask": ("baseline", "describe")}
CAPTION_POLICIES: tuple[str, ...] = typing.get_args(CaptionPolicy)


@dataclass(frozen=True)
class JoinOptions:
    """How to join and which records to build: the one declaration of these options (default, help text,
    validation). The run config's DataArguments extends it, and `python -m sit_vqa.apps.prepare` builds its command
    line from it, so both show and use the same defaults. Never mutated."""

    mode: Mode = field(default="sit", metadata={
        "help": "Records to build: sit (description then answer), baseline (answer only), mixed (baseline + SIT "
                "forms), multitask (baseline + separate describe records: the control)."})
    caption_policy: CaptionPolicy = field(default="random", metadata={
        "help": "Caption per question: first, random (seeded), longest, or all (one record per caption)."})
    answer_policy: AnswerPolicy = field(default="multiple_choice_answer", metadata={
        "help": "Target answer: VQAv2's multiple_choice_answer, or the most frequent of the annotators' answers "
                "(ties: lexicographically smallest)."})
    subset_questions: int | None = field(default=None, metadata={"help": "A seeded subset of N questions."})
    subset_images: int | None = field(default=None, metadata={
        "help": "A seeded subset of N images, with all their questions."})
    subset_seed: int = field(default=42, metadata={
        "help": "Seed of the subset, the random captions and the mixed fraction."})
    mixed_sit_fraction: float = field(default=1.0, metadata={
        "help": "mode mixed: every question gets its baseline record and a seeded fraction also its SIT record."})
    check_images: bool = field(default=False, metadata={
        "help": "Decode every image; drop (and count) questions whose image file is missing or unreadable."})
    templates: dict[str, str] | str | None = field(default=None, metadata={
        "help": "Template overrides: a mapping (in YAML) or the path of a YAML file holding one (keys: "
                + ", ".join(TEMPLATE_KEYS) + "; fields {question} {caption} {answer})."})

    instruction_pool: str | None = field(default=None, metadata={
        "help": "YAML file of instruction phrasings per task (configs/prompts/instruction_pool.yaml): every record "
                "gets one, drawn with subset_seed, recorded in its instruction_variant column. None: the "
                "templates' one phrasing (the paper's)."})

    def __post_init__(self):
        if self.subset_questions is not None and self.subset_images is not None:
            raise ConfigError("set subset_questions or subset_images, not both")
        for name in ("subset_questions", "subset_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer (or None for everything), got {value!r}")
        if isinstance(self.subset_seed, bool) or not isinstance(self.subset_seed, int) or self.subset_seed < 0:
            raise ConfigError(f"subset_seed must be a non-negative integer, got {self.subset_seed!r}")
        fraction = self.mixed_sit_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"mixed_sit_fraction must be in [0, 1], got {self.mixed_sit_fraction!r}")
        for name, choices in (("mode", MODES), ("caption_policy", CAPTION_POLICIES), ("answer_policy", ANSWER_POLICIES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; expected one of: {', '.join(choices)}")
        # read and checked now, once: a bad template fails at parse, not after the model has loaded, and a
        # templates file edited later does not change a parsed config (cached_property: no field is touched)
        _ = self.template_set, self.pool
        self._check_pool_covers_the_mode()

    def _check_pool_covers_the_mode(self) -> None:
        """A pool without phrasings for a kind the mode writes would leave those records on the templates'
        phrasing without a word: say so instead."""
        if self.pool is None:
            return
        missing = [kind for kind in MODE_KINDS[self.mode] if not self.pool.of(kind)]
        if missing:
            raise ConfigError(
                f"instruction pool {self.instruction_pool} has no {' / '.join(missing)} phrasings, which mode "
                f"{self.mode} writes records of; add a {missing[0]}: [...] list of phrasings to it (see "
                "configs/prompts/instruction_pool.yaml), or leave instruction_pool out for the templates' phrasing"
            )

    @functools.cached_property
    def pool(self) -> InstructionPool | None:
        """The instruction pool, read and checked once (None without one)."""
        return load_instruction_pool(self.instruction_pool)

    @functools.cached_property
    def template_set(self) -> Templates:
        """The configured templates, checked (known fields, the parser reads their answers back)."""
        return load_templates(self.templates)

    def join_options(self) -> JoinOptions:
        """Just the join's options (DataArguments carries more)."""
        return JoinOptions(**{f.name: getattr(self, f.name) for f in fields(JoinOptions)})

    def to_dict(self) -> dict:
        """The options as recorded in join reports and cache keys; templates as the full set in use."""
        options = {f.name: getattr(self, f.name) for f in fields(JoinOptions)}
        pool = self.pool.to_dict() if self.pool else None  # the phrasings in use, not a file name
        return {**options, "templates": asdict(self.template_set), "instruction_pool": pool}


@dataclass
class JoinReport:
    """What the join read, dropped (by reason, in questions) and wrote. Saved as join_report.json.

    The counts add up: questions_read = joined + dropped[no_annotation] + dropped[no_caption];
    joined = selected + not_selected; selected = questions_written + dropped[image_missing] + dropped[image_unreadable].
    """

    mode: str
    data_subtype: str | None  # the VQAv2 files' split, e.g. val2014
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
            f"VQAv2 x COCO join ({self.data_subtype or 'unknown split'}, mode {self.mode}):\n"
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
    image_dir = require_image_dir(image_dir)
    report = JoinReport(
        mode=options.mode,
        data_subtype=questions.data_subtype,
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
    images = _ImageBank.of(joined, captions, questions.data_subtype, image_dir.resolve())
    if options.check_images:
        joined = drop_bad_images(joined, images, report)
        images = _ImageBank.of(joined, captions, questions.data_subtype, image_dir.resolve())
    else:
        count_missing_images(images, image_dir, report)

    tables = _question_records(joined, images, options)
    if options.mode == "multitask":
        tables["describe"] = _describe_records(images, options)
    report.questions_written = joined.num_rows
    report.images_written = len(images.image_ids)
    report.records = {kind: table.num_rows for kind, table in tables.items()}
    report.records_total = sum(report.records.values())
    return pa.concat_tables(tables.values()), report


def require_image_dir(image_dir: str | Path) -> Path:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"image directory not found: {image_dir} (pass the folder holding the COCO images of "
                        f"the questions' split, e.g. train2014/)")
    return image_dir


def _check_same_split(questions: VqaQuestions, annotations: VqaAnnotations) -> None:
    if questions.data_subtype and annotations.data_subtype and questions.data_subtype != annotations.data_subtype:
        raise DataError(
            f"the questions file {questions.path} is for {questions.data_subtype} but the annotations file "
            f"{annotations.path} is for {annotations.data_subtype}; pass the two files of the same split"
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
        examples = question_ids.take(np.flatnonzero(mask)[:EXAMPLES_PER_REASON]).to_pylist()
        report.drop_examples[reason] = [f"question_id {question_id}" for question_id in examples]


def _select_subset(rows: np.ndarray, image_ids: np.ndarray, options: JoinOptions, report: JoinReport) -> np.ndarray:
    """A seeded sample of the joined questions, or of their images with all their questions; file order kept."""
    rng = np.random.default_rng([options.subset_seed, _SUBSET_STREAM])
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
    report.subset = {"by": by, "requested": wanted, "available": available, "seed": options.subset_seed}
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
    rng = np.random.default_rng([options.subset_seed, _CAPTION_STREAM])
    owner, caption = _choose_captions(images.by_question, images, options.caption_policy, rng)
    pairs = joined.take(owner) if options.caption_policy == "all" else joined  # else owner is the identity
    pairs = pairs.append_column("image_path", images.paths.take(images.by_question[owner]))
    pairs = pairs.append_column("caption", images.captions.take(caption))
    if options.mode == "sit":
        return {"sit": _with_targets("sit", pairs, options)}
    records = {"baseline": _with_targets("baseline", pairs, options)}
    if options.mode == "mixed":
        rng = np.random.default_rng([options.subset_seed, _MIXED_STREAM])
        count = joined.num_rows
        with_sit = rng.choice(count, size=round(options.mixed_sit_fraction * count), replace=False)
        records["sit"] = _with_targets("sit", pairs.take(np.flatnonzero(np.isin(owner, with_sit))), options)
    return records


def _describe_records(images: _ImageBank, options: JoinOptions) -> pa.Table:
    """One "Describe the image" record per image (per caption for `all`)."""
    rng = np.random.default_rng([options.subset_seed, _DESCRIBE_STREAM])
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
    return _with_targets("describe", records, options)


def _with_targets(kind: str, records: pa.Table, options: JoinOptions) -> pa.Table:
    """records plus instruction, target, kind and instruction_variant, in `COLUMNS` order."""
    instruction, variant = _instructions(kind, records, options)
    target = _format_column(getattr(options.template_set, f"{kind}_target"), records)
    records = records.append_column("instruction", instruction).append_column("target", target)
    records = records.append_column("kind", pa.repeat(kind, records.num_rows))
    return records.append_column("instruction_variant", variant).select(list(COLUMNS))


def _instructions(kind: str, records: pa.Table, options: JoinOptions):
    """(instruction column, variant column): the templates' phrasing, or one of the pool's per record, drawn
    with the seed (a stream per kind, so that adding describe records never redraws the questions')."""
    phrasings = options.pool.of(kind) if options.pool else ()
    count = records.num_rows
    if not phrasings:
        template = getattr(options.template_set, f"{kind}_instruction")
        return _format_column(template, records), pa.array(np.full(count, DEFAULT_VARIANT, dtype=np.int64))
    rng = np.random.default_rng([options.subset_seed, _PHRASING_STREAM, POOL_TASKS.index(kind)])
    chosen = rng.integers(len(phrasings), size=count)
    candidates = [pc.cast(_format_column(phrasing, records), pa.string()) for phrasing in phrasings]
    instruction = pc.choose(pa.array(chosen, pa.int64()), *[_array(c) for c in candidates])
    return instruction, pa.array(chosen, pa.int64())


def _array(column):
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


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
