"""One bad image must not end a long run: a record whose image cannot be read is skipped and named, and the
run stops only when too large a share of the images fails (a wrong image_dir, a damaged copy).

Without `check_images` (the default: checking every VQAv2 image up front takes a while) a truncated JPEG is
found only when training reads it, possibly hours in. `SkipUnreadableImages` then logs the record, appends it
to the run's unreadable_images.jsonl (read into data_report.json when the run ends) and gives the batch the
next readable record in its place, so batches keep their size and a resumed run reads what the uninterrupted
one read (the substitute depends only on the index). That record is seen twice in the epoch: for a few bad
files among hundreds of thousands, nothing measurable.

DataLoader workers each count their own reads (a worker's share estimates the whole's); every process appends
to the same log file, one short line per write (O_APPEND keeps lines whole on a local filesystem).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from sit_vqa.errors import DataError
from sit_vqa.modeling.collate import UnreadableImageError

logger = logging.getLogger(__name__)

# More unreadable images than this share of those read stops the run: that is no stray damaged file.
MAX_UNREADABLE_SHARE = 0.01
# ... judged only after this many reads: a share of the first handful says nothing.
MIN_READS_FOR_SHARE = 100
CHECK_IMAGES_HINT = ("set check_images: true (the data section, or --check_images true) to find and drop every "
                     "unreadable image before training")
_LISTED_IN_REPORT = 100


class SkipUnreadableImages(torch.utils.data.Dataset):
    """`dataset` (a TransformedDataset) with records whose image cannot be read skipped, each named in the log
    and in `log_path` (a JSON line per skip; None: the log only)."""

    def __init__(self, dataset, log_path: str | Path | None, *, max_share: float = MAX_UNREADABLE_SHARE,
                 min_reads: int = MIN_READS_FOR_SHARE):
        self.dataset = dataset
        self.log_path = Path(log_path) if log_path is not None else None
        self.max_share = max_share
        self.min_reads = min_reads
        self.reads = 0
        self.unreadable = 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        last_error = None
        for offset in range(len(self.dataset)):
            try:
                sample = self.dataset[(int(index) + offset) % len(self.dataset)]
            except UnreadableImageError as error:
                self._skip(error)
                last_error = error
                continue
            self.reads += 1
            return sample
        raise DataError(f"none of the {len(self.dataset)} training records has a readable image (the last: "
                        f"{last_error}); check image_dir and the image files, or {CHECK_IMAGES_HINT}")

    def _skip(self, error: UnreadableImageError) -> None:
        self.reads += 1
        self.unreadable += 1
        logger.warning("skipping record %s: %s (the next record takes its place; %s)", error.record, error,
                       CHECK_IMAGES_HINT)
        if self.log_path is not None:
            line = json.dumps({"record": error.record, "image": str(error.path), "error": str(error)})
            self.log_path.parent.mkdir(parents=True, exist_ok=True)  # another rank may not have made it yet
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if self.reads >= self.min_reads and self.unreadable > self.max_share * self.reads:
            where = f"; the skipped records are listed in {self.log_path}" if self.log_path else ""
            raise DataError(
                f"{self.unreadable} of the {self.reads} training images read so far cannot be read (more than "
                f"the {self.max_share:.0%} a run tolerates); the last: {error}. The image files are damaged or "
                f"image_dir is wrong: fix them, or {CHECK_IMAGES_HINT}{where}"
            )


def unreadable_images_report(log_path: Path) -> dict | None:
    """The data report's entry for the skipped records (each once, also when a resumed run read it again):
    how many, and which (the first 100; the log file has all)."""
    if not log_path.is_file():
        return None
    skipped = {}
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a kill
        skipped.setdefault((row.get("record"), row.get("image")), row)
    rows = list(skipped.values())
    return {"count": len(rows), "max_share": MAX_UNREADABLE_SHARE, "log": log_path.name,
            "records": rows[:_LISTED_IN_REPORT], "hint": CHECK_IMAGES_HINT}
