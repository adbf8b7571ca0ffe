"""The run configuration: three dataclasses read from one flat YAML file plus command-line overrides.

    python train.py --config vqa_sit.yaml --learning_rate 2e-5 --output_dir runs/try

`ModelArguments` and `DataArguments` are ours; the third is `transformers.TrainingArguments` (with the
paper's defaults), so every Trainer option (batch size, accumulation, bf16, logging, saving,
gradient checkpointing, DDP) is a config key with the name users already know. Parsing is done by
`transformers.HfArgumentParser`; this module adds what it lacks for YAML files: unknown keys and
values of the wrong type are errors that name the file (or the command-line flag) and the key, and the
data paths a config names must exist. Parsing writes nothing: a config with `sample_dir` gets the sample's
file paths here, and the sample itself is made by `sit_vqa.samples.generated.ensure_config_sample`, a
step of the commands that read data. Relative `sample_dir` and `prepared_cache_dir` values lie under the
cache root (`SIT_VQA_CACHE`, default ~/.cache/sit_vqa), never in the current directory.
A parsed `RunConfig` is never mutated afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser, TrainingArguments

from sit_vqa.modeling import precision
from sit_vqa.modeling.arguments import ModelArguments
from sit_vqa.modeling.families import family_names, model_family
from sit_vqa.samples.generated import split_paths
from sit_vqa.data.join import JoinOptions
from sit_vqa.errors import ConfigError, unknown_options_message
from sit_vqa.files import load_yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_INSTRUCTION_POOL = CONFIG_DIR / "prompts" / "instruction_pool.yaml"  # phrasings, held-out ones too
CACHE_ENV = "SIT_VQA_CACHE"  # overrides the cache root, as HF_HOME does for the HF libraries


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the module docstring's layout and shows every option's default."""


RAW_FILE_KEYS = ("questions", "annotations", "captions", "image_dir")
SAMPLE_SPLITS = {"train": "train2014", "eval": "val2014"}  # the generated split each role's keys point into


@dataclass(frozen=True)
class DataArguments(JoinOptions):
    """The data of a run: the join's options (declared once, in JoinOptions) plus where the files are."""

    train_questions: str | None = field(default=None, metadata={"help": "v2_OpenEnded_mscoco_train2014_questions.json"})
    train_annotations: str | None = field(default=None, metadata={"help": "v2_mscoco_train2014_annotations.json"})
    train_captions: str | None = field(default=None, metadata={"help": "COCO captions_train2014.json"})
    train_image_dir: str | None = field(default=None, metadata={"help": "Directory of the COCO train2014 images."})
    train_dataset_dir: str | None = field(
        default=None, metadata={"help": "A dataset prepared by `python -m sit_vqa.apps.prepare` (instead of raw files)."}
    )
    eval_questions: str | None = field(default=None, metadata={"help": "Validation questions (VQA scoring)."})
    eval_annotations: str | None = field(default=None, metadata={"help": "Validation annotations."})
    eval_captions: str | None = field(default=None, metadata={"help": "Validation COCO captions."})
    eval_image_dir: str | None = field(default=None, metadata={"help": "Directory of the validation images."})
    eval_dataset_dir: str | None = field(default=None, metadata={"help": "A prepared validation dataset."})
    sample_dir: str | None = field(
        default=None,
        metadata={"help": "Generate the procedural sample (sit_vqa.samples.scenes: official VQAv2 + COCO formats) into "
                  "this directory on first use and train and evaluate on it; it sets the train_*/eval_* files. "
                  f"A relative path lies under the cache root (${CACHE_ENV}, default ~/.cache/sit_vqa)."},
    )
    sample_train_images: int = field(default=64, metadata={"help": "sample_dir: train2014 images to generate."})
    sample_val_images: int = field(default=24, metadata={"help": "sample_dir: val2014 images to generate."})
    sample_seed: int = field(default=0, metadata={"help": "sample_dir: the generator's seed."})
    sample_style: Literal["bundled", "simple", "named"] = field(
        default="bundled", metadata={"help": "sample_dir: bundled (like data/sample), simple (64 px, 1-3 shapes, "
                                     "varied captions) or named (1-3 distinct shapes on white, captions name each)."}
    )
    eval_subset_questions: int | None = field(
        default=200, metadata={"help": "Questions of the eval split scored during training (None: all)."}
    )
    prepared_cache_dir: str = field(
        default="prepared",
        metadata={"help": f"Where joined datasets are cached; a relative path lies under the cache root (${CACHE_ENV}, "
                  "default ~/.cache/sit_vqa)."},
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache the frozen ViT's features of every training image here (built once, resumably; "
                  "bf16, memory-mapped) and train from them: no ViT forward per step. Refused when stale "
                  "(other ViT weights, image_pipeline or processor settings, changed image files)."},
    )
    text_data: str | None = field(default=None, metadata={"help": "causal_lm: Alpaca-format JSON file."})
    text_data_translated: str | None = field(
        default=None, metadata={"help": "causal_lm, text_mode=translate: the same records in another language."}
    )
    text_mode: Literal["plain", "repeat", "translate"] = field(
        default="repeat", metadata={"help": "causal_lm: plain Alpaca, 'First repeat the input, then ...', or translate."}
    )
    eval_text_data: str | None = field(
        default=None, metadata={"help": "causal_lm: held-out Alpaca-format records that evaluate.py answers "
                                "(never trained on: training reads text_data only)."}
    )
    eval_text_data_translated: str | None = field(
        default=None, metadata={"help": "causal_lm, text_mode=translate: eval_text_data in the other language."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.eval_subset_questions is not None and self.eval_subset_questions < 1:
            raise ConfigError(f"eval_subset_questions must be a positive integer (or null: all), "
                              f"got {self.eval_subset_questions}")
        if self.sample_dir and (self.sample_train_images < 1 or self.sample_val_images < 1):
            raise ConfigError("sample_train_images and sample_val_images must be at least 1")

    def sample_files(self) -> dict[str, str]:
        """The raw train_*/eval_* keys that sample_dir fills: those of each role left unset (a role with any file
        of its own keeps its files, e.g. another eval set). Names the files; the sample step makes them."""
        if not self.sample_dir:
            return {}
        files = {}
        for role, split in SAMPLE_SPLITS.items():
            if not any(getattr(self, f"{role}_{key}") for key in (*RAW_FILE_KEYS, "dataset_dir")):
                files.update({f"{role}_{key}": path for key, path in split_paths(self.sample_dir, split).items()})
        return files

    def raw_files(self, role: str) -> dict[str, str] | None:
        """The raw files of the train_* or eval_* keys as {questions, annotations, captions, image_dir}, or None."""
        values = {key: getattr(self, f"{role}_{key}") for key in RAW_FILE_KEYS}
        return values if all(values.values()) else None


@dataclass
class SitTrainingArguments(TrainingArguments):
    """TrainingArguments with the paper's recipe as defaults (LAVIS InstructBLIP fine-tuning)."""

    output_dir: str | None = field(default="runs/sit", metadata={"help": "Where checkpoints and logs go."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "Not applied to biases and norms (Trainer default)."})
    warmup_steps: float = field(default=1000, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Cosine decay to 0 after warm-up."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Generation batch size per device."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs."})
    seed: int = field(default=42, metadata={"help": "Training seed."})
    logging_steps: float = field(default=10, metadata={"help": "Log loss/lr/throughput every N steps."})
    save_steps: float = field(default=500, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=3, metadata={"help": "Keep the newest N checkpoints."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Logging integrations."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay false: samples are built lazily."})
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Default: on with a CUDA GPU that supports it, off on CPU. "
                  "(fp16 is not recommended: NaN with Flan-T5, unstable Q-Former.)"},
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the latest complete checkpoint in output_dir."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete an earlier run's checkpoints in output_dir and start over."}
    )
    eval_vqa_steps: int = field(default=0, metadata={"help": "Score VQA accuracy on the eval split every N steps (0: off)."})
    generation_max_new_tokens: int = field(default=64, metadata={"help": "Generation length for VQA scoring."})
    generation_num_beams: int = field(default=1, metadata={"help": "Beams for VQA scoring."})
    # The Trainer's default (None) makes DDP search the autograd graph for unused parameters on every step.
    # Every parameter this package trains (Q-Former, query tokens, projection, ViT post-layernorm, LoRA
    # adapters, or all weights) is on the loss path -- tests/training/test_scale_costs.py checks each policy -- and were
    # one not, DDP would stop with an error naming it rather than train wrongly.
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP searches for parameters without a gradient every step. Off: every parameter this "
                  "package trains gets one. Set true only for a model with trainable weights off the loss path."},
    )

    # TrainingArguments' own key, typed as what it is now (transformers 5.x turns its legacy strings such as
    # "full_shard auto_wrap" into fsdp_config entries and then into True): the sharding itself is set in fsdp_config.
    fsdp: bool = field(
        default=False,
        metadata={"help": "Shard the model over the run's processes (FSDP2 through accelerate; launch with torchrun "
                  "or accelerate launch, 2+ processes). fsdp_config says how: transformer_layer_cls_to_wrap "
                  "(the blocks sharded as units), reshard_after_forward, cpu_offload, activation_checkpointing. "
                  "See sit_vqa.training.sharding."},
    )

    def __post_init__(self):
        _check_ranges(self)
        if self.bf16 is None:
            self.bf16 = precision.bf16_by_default(self.use_cpu)
        super().__post_init__()


# Values that cannot be meant (TrainingArguments accepts save_steps: -5 and trains without saving).
POSITIVE = ("save_steps", "logging_steps", "eval_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
            "gradient_accumulation_steps", "num_train_epochs", "learning_rate", "generation_max_new_tokens",
            "generation_num_beams", "save_total_limit")
NON_NEGATIVE = ("warmup_steps", "weight_decay", "dataloader_num_workers", "eval_vqa_steps", "max_grad_norm", "seed")


def _check_ranges(args: SitTrainingArguments) -> None:
    for name in POSITIVE:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    for name in NON_NEGATIVE:
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name} must not be negative, got {value}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ConfigError(f"max_steps must be a positive number of steps, or -1 to train num_train_epochs; "
                          f"got {args.max_steps}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelArguments
    data: DataArguments
    training: SitTrainingArguments
    source: str  # the YAML file it came from ("<defaults>" without one)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, flat, as in the YAML file (written next to checkpoints)."""
        flat = {}
        for section in (self.model, self.data):
            flat.update(dataclasses.asdict(section))
        flat.update(self.training.to_dict())
        flat["templates"] = dataclasses.asdict(self.data.template_set)  # the set in use, not a file name
        return flat


SECTIONS = (ModelArguments, DataArguments, SitTrainingArguments)


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or a bare name (with or without .yaml) looked up in configs/."""
    path = Path(name)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.exists():
            return candidate
    shipped = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {name} not found (looked in the current directory and {CONFIG_DIR}; shipped: {shipped})")


def cache_root() -> Path:
    """Where generated samples and prepared datasets go unless a config names an absolute path."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sit_vqa").expanduser()


def _in_cache(path: str | None) -> str | None:
    if path is None:
        return None
    path = Path(path).expanduser()
    return str(path if path.is_absolute() else cache_root() / path)


@dataclass(frozen=True)
class CommandLine:
    """The command the overrides were typed on, for the messages about them: how to ask it for help, and its
    own options (an unknown flag may be a typo of one of them as well as of a config key)."""

    help: str = "python train.py --help lists every key"
    options: tuple[str, ...] = ()


TRAIN_COMMAND = CommandLine()


def load_config(
    config: str | Path | None, overrides: list[str] | None = None, data_roles: tuple[str, ...] = ("train", "eval"),
    command: CommandLine = TRAIN_COMMAND,
) -> RunConfig:
    """Read a YAML config, apply `--key value` overrides, validate, and return the frozen RunConfig.

    The data paths of `data_roles` (train, eval) that the config names must exist (evaluation passes ("eval",): it
    needs no training data); those a `sample_dir` fills are made by `ensure_config_sample`. Writes nothing.
    `command`: the command line the overrides come from (evaluate.py passes its own).
    """
    source = "<defaults>"
    values: dict[str, Any] = {}
    if config is not None:
        path = resolve_config_path(config)
        source = str(path)
        values = _read_yaml(path)
    overrides = list(overrides or [])
    fields = _field_types()
    values = {key: _check_value(source, key, value, fields) for key, value in values.items()}
    model, data, training = _parse(source, values, overrides, fields, command)
    # computed values go into new frozen instances (dataclasses.replace), never into the parsed ones
    data = dataclasses.replace(data, sample_dir=_in_cache(data.sample_dir),
                               prepared_cache_dir=_in_cache(data.prepared_cache_dir))
    sample_files = data.sample_files()
    data = dataclasses.replace(data, **sample_files)
    run = RunConfig(model, data, training, source)
    if model.model_dtype == "bfloat16" and not training.bf16:
        raise ConfigError(f"{source}: model_dtype bfloat16 needs bf16: true (bf16 autocast for the fp32 trained weights)")
    if data.feature_cache_dir and (model.train_all or not model_family(model.model_type).caches_vision_features):
        raise ConfigError(f"{source}: feature_cache_dir caches the frozen ViT of an "
                          f"{family_names(lambda f: f.caches_vision_features)} model; it cannot be used with "
                          f"train_all (the ViT would train) or model_type {model.model_type}")
    _check_paths(run, data_roles, made_by_the_sample=set(sample_files), overrides=overrides)
    return run


def _parse(source: str, values: dict[str, Any], overrides: list[str], fields: dict[str, Any], command: CommandLine):
    """The three sections from the file's values and the command line; an error names where the bad value came
    from: the flag of the command line, else the file."""
    # allow_abbrev=False: a typo never silently sets another key; exit_on_error=False: a bad flag value raises
    parser = HfArgumentParser(SECTIONS, allow_abbrev=False, exit_on_error=False)
    parser.set_defaults(**values)
    try:
        *sections, unknown = parser.parse_args_into_dataclasses(
            args=overrides, return_remaining_strings=True, look_for_args_file=False)
    except argparse.ArgumentError as error:  # a flag without its value, or a value of the wrong type
        raise ConfigError(f"command line: {error} ({command.help})") from None
    except (ConfigError, ValueError) as error:  # __post_init__ checks; TrainingArguments explains itself
        raise ConfigError(f"{_blame(source, overrides, str(error))}: {error}") from None
    if unknown:
        message = unknown_options_message(unknown, [*fields, *command.options], "", lists=command.help)
        raise ConfigError(f"command line: {message}")
    return sections


def _blame(source: str, overrides: list[str], message: str) -> str:
    """The command-line flag a validation message names (the flag wins over the file), else the file."""
    for flag in overrides:
        name = flag[2:].split("=")[0]
        if flag.startswith("--") and re.search(rf"\b{re.escape(name)}\b", message):
            return f"command line --{name}"
    return source


def _origin(source: str, overrides: list[str], key: str) -> str:
    """Where `key`'s value came from: the command line's --key (it wins over the file), else the file."""
    given = any(flag == f"--{key}" or flag.startswith(f"--{key}=") for flag in overrides)
    return f"command line --{key}" if given else f"{source}: {key}"


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; pass a YAML file (e.g. {path}/vqa_sit.yaml)")
    try:
        values = load_yaml(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of `key: value` settings, got {type(values).__name__}")
    return values


def config_keys() -> tuple[str, ...]:
    """Every key a config file or train.py's command line may set."""
    return tuple(_field_types())


def _field_types() -> dict[str, Any]:
    types_by_name = {}
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            if f.init:
                types_by_name[f.name] = hints[f.name]
    return types_by_name


def _check_value(source: str, key: str, value: Any, fields: dict[str, Any]) -> Any:
    """The value of `key` as the field's type wants it; a ConfigError naming the file and key otherwise."""
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"{source}: unknown key {key!r}.{hint} (python train.py --help lists every key)")
    value = _number_from_string(value, fields[key])
    if not _matches(value, fields[key]):
        raise ConfigError(
            f"{source}: key {key!r} must be {_describe(fields[key])}, got {type(value).__name__} {value!r}"
        )
    return value


def _number_from_string(value: Any, annotation: Any) -> Any:
    """YAML 1.1 (PyYAML) reads `1e-3` (no dot) as a string: take a numeric string for a numeric field."""
    if not isinstance(value, str) or _matches(value, annotation):
        return value
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    for kind in (int, float):
        if kind in members:
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a field annotation (the subset of typing our configs use)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation} or isinstance(value, annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(_matches(k, key_type) and _matches(v, value_type) for k, v in value.items())
    if annotation is dict:
        return isinstance(value, dict)
    return True  # a TrainingArguments type we do not model: TrainingArguments validates it


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(member) for member in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _check_paths(run: RunConfig, roles: tuple[str, ...], made_by_the_sample: set[str], overrides: list[str]) -> None:
    """Every data path of `roles` (train, eval) that the config names must exist (those the sample step makes
    need not, yet); raw files come as a complete set."""
    data = run.data
    for role in roles:
        given = [key for key in RAW_FILE_KEYS if getattr(data, f"{role}_{key}")]
        if given and len(given) != len(RAW_FILE_KEYS):
            missing = [f"{role}_{key}" for key in RAW_FILE_KEYS if key not in given]
            raise ConfigError(f"{run.source}: raw {role} data needs all four files; missing {', '.join(missing)}")
    path_keys = [f"{role}_{key}" for role in roles for key in (*RAW_FILE_KEYS, "dataset_dir")]
    if "train" in roles:
        path_keys += ["text_data", "text_data_translated"]
    if "eval" in roles:
        path_keys += ["eval_text_data", "eval_text_data_translated"]
    for key in path_keys:
        value = getattr(data, key)
        if value and key not in made_by_the_sample and not Path(value).exists():
            raise ConfigError(f"{_origin(run.source, overrides, key)}: {value} does not exist (fix the path, or see "
                              "data/README.md)")
    model = run.model
    if model.model_name_or_path and model.tiny_model is None and model.local_files_only:
        if not Path(model.model_name_or_path).is_dir():
            raise ConfigError(
                f"{_origin(run.source, overrides, 'model_name_or_path')}: {model.model_name_or_path} is not a local "
                "directory (local_files_only is set)"
            )
