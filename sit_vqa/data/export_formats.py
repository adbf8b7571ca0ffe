"""The prepared SIT records in other VLM frameworks' training formats (`python -m sit_vqa.apps.prepare --format`).

Each record becomes one user turn (the image and the record's full instruction) and one assistant turn (its
target: "Description: <caption>\\nAnswer: <answer>" for SIT, the answer for baseline, the caption for describe).
Every format is one entry of `FORMATS`: its file name, whether the file is JSON Lines or one JSON array, and
the function that turns a `Turn` into that framework's record. Formats:

- llamafactory: LLaMA-Factory's ShareGPT form (`messages` with role/content, `<image>` in the user turn,
  `images`), plus the `dataset_info.json` entry that registers it;
- swift: ms-swift's `messages` + `images`, JSON Lines;
- trl: TRL's conversational form (content as `{"type": "image"}` / `{"type": "text"}` parts) + `images`;
- llava: LLaVA's `id` / `image` / `conversations` (`from` human/gpt, `<image>\\n` opening the first turn);
- lavis: LAVIS's VQA annotation list `[{"image", "question", "answer": [target], "question_id"}]` (the
  `coco_vqa_instruct` builder), which `read_lavis` reads back;
- seqins: the SIT paper's own records (hanxuhu/SeqIns, LAVIS/make_instruct_data.py), for LAVIS's `coco_caption`
  builder: `[{"image", "caption", "text_input", "text_output", "image_id", "question_id"}]`, which `read_seqins`
  reads back, as it reads the files SeqIns' code wrote.

Image paths are absolute, or relative to `image_root` when one is given; an image outside it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sit_vqa.errors import DataError
from sit_vqa.files import atomic_path

IMAGE_TOKEN = "<image>"  # the placeholder LLaMA-Factory, ms-swift and LLaVA replace by the image's tokens
DATASET_NAME = "sit_vqa"  # the name the LLaMA-Factory registration gives the dataset
_BATCH = 1024


@dataclass(frozen=True)
class Turn:
    """One record as every format sees it: an id, the image (as written), the prompt and the target; the COCO
    image id and the record's caption where the source has them (the seqins format writes both)."""

    id: str
    image: str
    prompt: str
    target: str
    image_id: int | str | None = None
    caption: str | None = None


def _llamafactory(turn: Turn) -> dict:
    return {"messages": [{"role": "user", "content": IMAGE_TOKEN + turn.prompt},
                         {"role": "assistant", "content": turn.target}],
            "images": [turn.image]}


def _trl(turn: Turn) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turn.prompt}]},
                         {"role": "assistant", "content": [{"type": "text", "text": turn.target}]}],
            "images": [turn.image]}


def _llava(turn: Turn) -> dict:
    return {"id": turn.id, "image": turn.image,
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{turn.prompt}"},
                              {"from": "gpt", "value": turn.target}]}


def _lavis(turn: Turn) -> dict:
    # LAVIS's datasets display (displ_item) and evaluate by question_id; the Turn id is unique per record
    return {"image": turn.image, "question": turn.prompt, "answer": [turn.target], "question_id": turn.id}


def _seqins(turn: Turn) -> dict:
    # SeqIns' fields; question_id (ours) keeps records of one image apart, LAVIS ignores it
    return {"image": turn.image, "caption": turn.caption, "text_input": turn.prompt, "text_output": turn.target,
            "image_id": turn.image_id, "question_id": turn.id}


def _llamafactory_registration(file_name: str) -> dict:
    """LLaMA-Factory's data/dataset_info.json entry for the written file."""
    return {DATASET_NAME: {
        "file_name": file_name, "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }}


@dataclass(frozen=True)
class ExportFormat:
    file_name: str
    json_lines: bool  # one record per line; else one JSON array
    record: Callable[[Turn], dict]
    registration: Callable[[str], dict] | None = None  # written as dataset_info.json beside the records


FORMATS: dict[str, ExportFormat] = {
    "llamafactory": ExportFormat("sit_vqa.json", False, _llamafactory, _llamafactory_registration),
    "swift": ExportFormat("sit_vqa.jsonl", True, _llamafactory),  # ms-swift reads the same messages + images
    "trl": ExportFormat("sit_vqa.jsonl", True, _trl),
    "llava": ExportFormat("sit_vqa_llava.json", False, _llava),
    "lavis": ExportFormat("sit_vqa_lavis.json", False, _lavis),
    "seqins": ExportFormat("sit_vqa_seqins.json", False, _seqins),
}
REGISTRATION_FILE = "dataset_info.json"


def export_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise DataError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}") from None


def check_new_output(out_dir: str | Path) -> Path:
    """An export never writes into a directory that holds something already (nothing is overwritten)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"--out {out_dir} already exists and is not empty; pass a new or empty directory")
    return out_dir


def image_reference(path: str, image_root: Path | None) -> str:
    """The image path as written: absolute, or relative to image_root (which must contain it)."""
    absolute = Path(path).resolve()
    if image_root is None:
        return str(absolute)
    try:
        return absolute.relative_to(image_root.resolve()).as_posix()
    except ValueError:
        raise DataError(f"image {absolute} is outside --image-root {image_root}; pass a root that holds "
                        f"every image (e.g. the --image-dir) or leave --image-root out for absolute paths") from None


def turns(dataset, image_root: Path | None = None) -> Iterator[Turn]:
    """The prepared dataset's records (sit_vqa.data.join COLUMNS) as Turns, in order."""
    names = ["question_id", "image_path", "instruction", "target", "kind", "image_id", "caption"]
    index = 0
    for batch in dataset.select_columns(names).iter(batch_size=_BATCH):
        for qid, path, prompt, target, kind, image_id, caption in zip(*(batch[name] for name in names), strict=True):
            # the index keeps ids unique (describe records share question_id -1; caption_policy=all repeats ids)
            yield Turn(f"{index:08d}-{kind}-{qid}", image_reference(path, image_root), prompt, target, image_id,
                       caption)
            index += 1


def write_export(records: Iterator[Turn], format_name: str, out_dir: str | Path,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write the records in `format_name` into the new directory out_dir (atomically, with `extra_files`,
    e.g. the join report, beside them). Returns the records file's path."""
    chosen = export_format(format_name)
    out_dir = check_new_output(out_dir)
    with atomic_path(out_dir) as staging:
        staging.mkdir(parents=True)
        with open(staging / chosen.file_name, "w", encoding="utf-8") as stream:
            _dump(map(chosen.record, records), stream, chosen.json_lines)
        if chosen.registration:
            (staging / REGISTRATION_FILE).write_text(json.dumps(chosen.registration(chosen.file_name), indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return out_dir / chosen.file_name


def _dump(rows: Iterator[dict], stream, json_lines: bool) -> None:
    """Streamed, so a large export never holds the whole file in memory."""
    if json_lines:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    stream.write("[")
    for position, row in enumerate(rows):
        stream.write(("," if position else "") + "\n" + json.dumps(row, ensure_ascii=False))
    stream.write("\n]\n")


def read_lavis(path: str | Path, image_root: str | Path | None = None) -> list[Turn]:
    """A LAVIS VQA annotation list (ours, or LAVIS's own vqa_train.json) as Turns: prompt = "question", target =
    the first of "answer" (a string or a list), id = "question_id" (else the position), image resolved against
    image_root when relative. Refuses a file that is not such a list, naming the record and the fix."""
    path = Path(path)
    return [_lavis_turn(where, position, row, image_root)
            for where, position, row in _records(path, "LAVIS VQA annotation")]


def read_seqins(path: str | Path, image_root: str | Path | None = None) -> list[Turn]:
    """SeqIns' records for LAVIS's coco_caption builder (ours, or the base_/describe_/merge_vqa_train.json its
    make_instruct_data.py wrote) as training Turns: prompt = "text_input", target = "text_output", with the
    record's "image_id" and "caption"; id = "question_id" (ours; else the position), image resolved against
    image_root when relative. Refuses a file that is not such a list, naming the record and the fix."""
    path = Path(path)
    return [_seqins_turn(where, position, row, image_root) for where, position, row in _records(path, "SeqIns")]


def _records(path: Path, kind: str) -> Iterator[tuple[str, int, dict]]:
    """The records of a JSON list file, each with where it is ("<path>: record <n>", for errors) and its position."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the {kind} file ({error})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: a {kind} file is a JSON list of records, found {type(rows).__name__}")
    for position, row in enumerate(rows):
        where = f"{path}: record {position}"
        if not isinstance(row, dict):
            raise DataError(f"{where} is not a JSON object: {row!r:.200}")
        yield where, position, row


def _strings(where: str, row: dict, keys: tuple[str, ...], shape: str, other: str) -> None:
    if not all(isinstance(row.get(key), str) for key in keys):
        fields = ", ".join(repr(key) for key in keys)
        raise DataError(f"{where} needs string fields {fields} ({shape}); got {row!r:.200}. {other}")


def _resolve(image: str, image_root) -> str:
    return str(Path(image_root) / image) if image_root is not None and not Path(image).is_absolute() else image


def _lavis_turn(where: str, position: int, row: dict, image_root) -> Turn:
    _strings(where, row, ("image", "question"), "LAVIS VQA format",
             "A SeqIns file (text_input / text_output) is read by read_seqins.")
    answer = row.get("answer")
    answers = [answer] if isinstance(answer, str) else answer
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: 'answer' must be a string or a non-empty list of strings, got {answer!r:.200}")
    return Turn(str(row.get("question_id", position)), _resolve(row["image"], image_root), row["question"],
                answers[0])


def _seqins_turn(where: str, position: int, row: dict, image_root) -> Turn:
    _strings(where, row, ("image", "text_input", "text_output"), "SeqIns / LAVIS coco_caption format",
             "A LAVIS VQA file (question / answer) is read by read_lavis.")
    image_id, caption = row.get("image_id"), row.get("caption")
    if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, (int, str))):
        raise DataError(f"{where}: 'image_id' must be an integer or a string, got {image_id!r:.200}")
    if caption is not None and not isinstance(caption, str):
        raise DataError(f"{where}: 'caption' must be a string, got {caption!r:.200}")
    return Turn(str(row.get("question_id", position)), _resolve(row["image"], image_root), row["text_input"],
                row["text_output"], image_id, caption)
