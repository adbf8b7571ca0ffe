"""Samples generated on first use: a config's `sample_dir` (the quickstart, the miniature experiment) gets the
procedural image-QA set of `sit_vqa.samples.scenes` written once, and again only when its settings or the
generator change, or a file of it went missing.

Parsing a config only names the sample's files (`split_paths`); `ensure_config_sample(config)` makes them, a
visible step of each command that reads data (train.py, evaluate.py, the miniature experiment)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sit_vqa.samples import world
from sit_vqa.samples import scenes as sample
from sit_vqa.samples.scenes import DEFAULT_SEED, DEFAULT_STYLE, SPLITS, write_sample
from sit_vqa.errors import DataError

SETTINGS_FILE = "sample_settings.json"


def split_paths(out_dir: str | Path, split: str) -> dict[str, str]:
    """The four raw inputs of a generated split, keyed like the config's train_*/eval_* keys."""
    out_dir = Path(out_dir)
    return {
        "questions": str(out_dir / f"v2_OpenEnded_mscoco_{split}_questions.json"),
        "annotations": str(out_dir / f"v2_mscoco_{split}_annotations.json"),
        "captions": str(out_dir / f"captions_{split}.json"),
        "image_dir": str(out_dir / split),
    }


def _generator_hash() -> str:
    """sha256 of the generator's source (the scenes and their words): a changed generator makes a new sample."""
    digest = hashlib.sha256()
    for module in (sample, world):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def ensure_sample(
    out_dir: str | Path, train_images: int, val_images: int, seed: int = DEFAULT_SEED, style: str = DEFAULT_STYLE
) -> bool:
    """Generate the sample into out_dir unless it already holds this very one, complete; True when it generated.

    out_dir/sample_settings.json (written last) records the settings and a hash of this generator's
    source, so a changed generator or other settings regenerate, and a cut-off generation is redone.
    Only a directory that is empty, missing or one of ours (it has the settings file) is written to.
    """
    out_dir = Path(out_dir)
    settings = {"train_images": train_images, "val_images": val_images, "seed": seed, "style": style,
                "generator_sha256": _generator_hash()}
    settings_path = out_dir / SETTINGS_FILE
    if settings_path.is_file() and json.loads(settings_path.read_text(encoding="utf-8")) == settings and all(
            Path(path).exists() for split in SPLITS for path in split_paths(out_dir, split).values()):
        return False
    if settings_path.is_file():  # ours, with other settings: clear our files, keep nothing stale
        settings_path.unlink()
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(
            f"{out_dir} is not empty and holds no {SETTINGS_FILE}: it is not a generated sample; point sample_dir "
            "at a new directory"
        )
    write_sample(out_dir, train_images, val_images, seed, style)
    settings_path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return True


def ensure_config_sample(config) -> bool:
    """The sample step of a run config (`sit_vqa.config.RunConfig`): generate its `sample_dir` on first use.
    Nothing to do without sample_dir; True when it generated."""
    data = config.data
    if not data.sample_dir:
        return False
    generated = ensure_sample(data.sample_dir, data.sample_train_images, data.sample_val_images, data.sample_seed,
                              data.sample_style)
    if generated:
        print(f"generated the procedural sample ({data.sample_train_images} train, {data.sample_val_images} val "
              f"images, style {data.sample_style}) in {data.sample_dir}")
    return generated
