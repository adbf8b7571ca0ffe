"""COCO captions (`captions_{split}.json`) through pycocotools' `COCO` API.

`COCO(path)` would `json.load` the whole file into dicts with every field; instead msgspec decodes only the
fields we use (typed, so a wrong file fails with a clear message), and the result is handed to
`COCO.createIndex()`, whose `imgToAnns` and `imgs` indexes the join then reads.

Captions are whitespace-normalised (COCO captions carry stray newlines and double spaces; a newline inside
a caption would split the "Description:" line of a SIT target). Nothing else about them changes.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import msgspec
from pycocotools.coco import COCO

from sit_vqa.errors import DataError
from sit_vqa.files import check_unique_ids, decode_json, int64_ids, read_bytes

CAPTIONS_FILE = "COCO captions file (captions_<split>.json)"


class _CaptionAnnotation(TypedDict):
    id: int
    image_id: int
    caption: str


class _Image(TypedDict):
    id: int
    file_name: NotRequired[str]


class _CaptionsFile(msgspec.Struct):
    annotations: list[_CaptionAnnotation]
    images: list[_Image] = []


@dataclass
class CocoCaptions:
    """A captions file indexed by pycocotools, plus each image's normalised captions in file order."""

    coco: COCO
    path: Path
    by_image: dict[int, list[str]] = field(repr=False)
    blank_captions: int  # captions that were empty after normalisation, left out of by_image

    @property
    def captions_read(self) -> int:
        return len(self.coco.anns)

    def file_name(self, image_id: int, split: str | None) -> str:
        """The image's `file_name` from the captions file, else the COCO naming scheme for `split`."""
        image = self.coco.imgs.get(image_id)
        if image is not None and image.get("file_name"):
            return image["file_name"]
        if split is None:
            raise DataError(
                f"{self.path}: image {image_id} has no file_name entry in $.images, and the questions file has "
                f"no data_subtype (e.g. \"train2014\") to build COCO_<split>_{image_id:012d}.jpg from"
            )
        return f"COCO_{split}_{image_id:012d}.jpg"


def load_captions(path: str | Path) -> CocoCaptions:
    """Read a COCO captions file and index it with pycocotools."""
    path = Path(path)
    data = read_bytes(path, CAPTIONS_FILE)
    try:
        parsed = decode_json(path, _CaptionsFile, "the " + CAPTIONS_FILE, data)
    except DataError as error:
        raise _wrong_kind(path, data) or error from None
    if not parsed.annotations:
        raise DataError(f"{path}: the captions file has no annotations; expected the {CAPTIONS_FILE}")
    # pycocotools indexes by id: a repeated id would silently replace a caption or an image's file_name
    check_unique_ids(path, "annotations", int64_ids(path, "annotations", [a["id"] for a in parsed.annotations], "id"), "id")
    check_unique_ids(path, "images", int64_ids(path, "images", [i["id"] for i in parsed.images], "id"), "id")
    int64_ids(path, "annotations", [a["image_id"] for a in parsed.annotations], "image_id")
    coco = COCO()
    coco.dataset = {"images": parsed.images, "annotations": parsed.annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    by_image, blank = _normalised_captions(coco)
    if not by_image:
        raise DataError(f"{path}: all {blank} captions are blank (empty or only whitespace); expected the "
                        f"{CAPTIONS_FILE} with its caption texts")
    return CocoCaptions(coco, path, by_image, blank)


def normalise_caption(caption: str) -> str:
    """Collapse runs of whitespace (newlines included) into single spaces and strip the ends."""
    return " ".join(caption.split())


def _normalised_captions(coco: COCO) -> tuple[dict[int, list[str]], int]:
    by_image, blank = {}, 0
    for image_id, image_annotations in coco.imgToAnns.items():
        captions = [normalise_caption(annotation["caption"]) for annotation in image_annotations]
        kept = [caption for caption in captions if caption]
        blank += len(captions) - len(kept)
        if kept:
            by_image[image_id] = kept
    return by_image, blank


def _wrong_kind(path: Path, data: bytes) -> DataError | None:
    """Name the file's kind when it is a known COCO/VQA file other than captions (a cheap byte sniff)."""
    if b'"multiple_choice_answer"' in data:
        kind = "a VQAv2 annotations file"
    elif b'"questions"' in data and b'"question_id"' in data:
        kind = "a VQAv2 questions file"
    elif b'"keypoints"' in data:
        kind = "a COCO person_keypoints file"
    elif b'"segmentation"' in data or b'"bbox"' in data:
        kind = "a COCO instances file (its annotations have bbox/segmentation, not caption)"
    else:
        return None
    return DataError(f"{path}: this is {kind}, not the {CAPTIONS_FILE}; pass captions_<split>.json from the "
                     f"COCO annotations archive")
