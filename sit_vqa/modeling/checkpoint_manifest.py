"""`CheckpointManifest`: the one record of what a checkpoint is (sit_vqa_checkpoint.json), and the one reader.

    manifest = read_manifest("runs/vqa_sit/final")      # a CheckpointManifest, or a CheckpointError
    manifest.model_type, manifest.global_step, manifest.config["mode"]

The training run makes one (`sit_vqa.training.manifest.run_manifest`: what trains, from which base, in which
frozen dtype, with which settings); `sit_vqa.modeling.checkpoint.write_checkpoint` adds the facts of the save
(the step, the tensors in the weights file) and writes it, last. Nothing else writes the file.

On disk it is a JSON object with `"format": "sit-vqa-checkpoint/<version>"` and one key per field. A change
that a reader of the older version would misread (a new field that changes how the model is rebuilt, such as
a quantization) adds a version to `READABLE_VERSIONS`; a manifest of a version not listed there is refused
with a CheckpointError saying so, never read half-way.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sit_vqa.errors import CheckpointError
from sit_vqa.files import write_json_atomically

MANIFEST_NAME = "sit_vqa_checkpoint.json"
# 2: the epochs the steps covered (`epoch`). Version 1 manifests load: those of main before the field have
# none (None), those written after it and before this version carry it already.
MANIFEST_VERSION = 2  # the version this code writes
READABLE_VERSIONS = (1, 2)
_FORMAT_PREFIX = "sit-vqa-checkpoint/"


@dataclass(frozen=True)
class CheckpointManifest:
    """What a checkpoint holds and how to rebuild its model. Defaults are those of manifests written before the
    field existed (a checkpoint of an older sit-vqa keeps loading)."""

    model_type: str  # the model family (ModelArguments.model_type)
    config: Mapping[str, Any]  # the run's full flat config (RunConfig.to_dict()): the settings it trained with
    # the base model the trained weights go onto: a hub id, an absolute directory (base_model_is_local), or a
    # directory inside the checkpoint (base_model_is_relative: a tiny model built in code); None: the config's
    base_model: str | None = None
    base_model_is_local: bool = False
    base_model_is_relative: bool = False
    frozen_dtype: str = "float32"  # the dtype the run's frozen weights had (sit_vqa.modeling.precision)
    global_step: int | None = None  # the optimizer steps behind the weights
    epoch: float | None = None  # the epochs of the training data those steps covered (None: not recorded)
    trained_tensors: tuple[str, ...] | None = None  # the names in trainable.safetensors (None: not recorded)
    version: int = MANIFEST_VERSION

    def at_save(self, global_step: int, trained_tensors: list[str], epoch: float | None = None) -> CheckpointManifest:
        """The manifest of one save: the run's, with its step (and epochs) and the tensors written."""
        return dataclasses.replace(self, global_step=global_step, epoch=epoch,
                                   trained_tensors=tuple(sorted(trained_tensors)))

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        version = fields.pop("version")
        if fields["trained_tensors"] is not None:
            fields["trained_tensors"] = list(fields["trained_tensors"])
        return {"format": f"{_FORMAT_PREFIX}{version}", **fields}

    @classmethod
    def from_json(cls, raw: Any, source: str | Path) -> CheckpointManifest:
        """The manifest of a parsed sit_vqa_checkpoint.json (`source` names it in errors)."""
        if not isinstance(raw, dict) or not str(raw.get("format", "")).startswith(_FORMAT_PREFIX):
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointError(f"{source}: unknown checkpoint format {found!r}; expected {_FORMAT_PREFIX}"
                                  f"{MANIFEST_VERSION} (pass a checkpoint directory written by train.py)")
        version = _version(raw["format"], source)
        values = {key: value for key, value in raw.items() if key != "format"}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls) if f.name != "version"})
        if unknown:
            raise CheckpointError(f"{source}: unknown field(s) {', '.join(unknown)} in a version {version} manifest "
                                  "(written by a modified sit-vqa?); pass a checkpoint written by train.py")
        if not isinstance(values.get("config"), dict):
            raise CheckpointError(f"{source}: the manifest has no config object (damaged); use another checkpoint")
        values.setdefault("model_type", values["config"].get("model_type", "instructblip"))
        if values.get("trained_tensors") is not None:
            values["trained_tensors"] = tuple(values["trained_tensors"])
        return cls(**values, version=version)

    def write(self, directory: str | Path) -> Path:
        return write_json_atomically(Path(directory) / MANIFEST_NAME, self.to_json())


def _version(format_name: str, source: str | Path) -> int:
    suffix = format_name.removeprefix(_FORMAT_PREFIX)
    version = int(suffix) if suffix.isdigit() else None
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{source}: checkpoint format {format_name!r} is a manifest version this sit-vqa cannot read (it reads "
            f"{', '.join(f'{_FORMAT_PREFIX}{v}' for v in READABLE_VERSIONS)}); the checkpoint was written by another "
            "version of sit-vqa: load it with that version, or upgrade sit-vqa (pip install -U sit-vqa)"
        )
    return version


def read_manifest(directory: str | Path) -> CheckpointManifest:
    """The manifest of the checkpoint in `directory`; a CheckpointError when there is none, or it is damaged, or
    of an unknown version."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a sit-vqa checkpoint (no {MANIFEST_NAME}); pass a checkpoint-N or final "
            "directory written by train.py"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the manifest is damaged ({error}); use another checkpoint") from None
    return CheckpointManifest.from_json(raw, path)
