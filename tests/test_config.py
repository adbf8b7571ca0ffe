"""The run config: every shipped YAML loads; unknown keys, wrong types and missing files are clear errors."""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sit_vqa.config import (
    CACHE_ENV,
    CONFIG_DIR,
    RAW_FILE_KEYS,
    SECTIONS,
    ConfigError,
    cache_root,
    load_config,
    resolve_config_path,
)
from sit_vqa.data.join import JoinOptions

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
PATH_KEYS = (
    "train_questions", "train_annotations", "train_captions", "train_image_dir",
    "eval_questions", "eval_annotations", "eval_captions", "eval_image_dir",
    "text_data", "text_data_translated", "eval_text_data", "eval_text_data_translated",
)


def _materialise_data_paths(config_file: Path, root: Path) -> None:
    """Create placeholder files/dirs at the relative data paths a config names, under root."""
    values = yaml.safe_load(config_file.read_text())
    for key in PATH_KEYS:
        if key in values:
            target = root / values[key]
            if key.endswith("image_dir"):
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("{}")


def test_there_are_shipped_configs():
    names = {path.name for path in SHIPPED}
    assert {"quickstart.yaml", "vqa_sit.yaml", "vqa_baseline.yaml", "vqa_mixed.yaml", "text_sit.yaml"} <= names


@pytest.mark.parametrize("config_file", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(config_file, tmp_path, monkeypatch):
    _materialise_data_paths(config_file, tmp_path)
    monkeypatch.chdir(tmp_path)
    run = load_config(config_file)
    values = yaml.safe_load(config_file.read_text())
    flat = run.to_dict()
    for key, value in values.items():  # every key of the file arrived, with its value
        if key == "report_to":
            continue
        if isinstance(value, dict):  # fsdp_config: TrainingArguments adds its defaults beside the file's entries
            assert value.items() <= flat[key].items(), key
            continue
        assert flat[key] == value or str(flat[key]).lower().endswith(str(value).lower()), key


@pytest.mark.parametrize("config_file", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_opens_with_its_launch_command(config_file):
    # one process (python), or the launcher a sharded recipe needs (torchrun / accelerate launch and its options)
    launcher = r"(python|torchrun( --[\w-]+ \S+)*|accelerate launch( --[\w-]+ \S+)*)"
    first = config_file.read_text().splitlines()[0]
    assert re.fullmatch(rf"# {launcher} train\.py --config {re.escape(config_file.name)}", first), first
    if yaml.safe_load(config_file.read_text()).get("fsdp"):  # FSDP needs 2+ processes: a launcher, not python
        assert not first.startswith("# python"), first


def test_quickstart_data_paths_exist_in_the_repo(monkeypatch):
    monkeypatch.chdir(CONFIG_DIR.parent)
    run = load_config("quickstart")
    assert run.model.tiny_model == "decoder"
    assert run.training.use_cpu


def test_paper_recipe_defaults(tmp_path, monkeypatch):
    _materialise_data_paths(CONFIG_DIR / "vqa_sit.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    training = load_config("vqa_sit.yaml").training
    assert training.learning_rate == 1e-5
    assert training.weight_decay == 0.05
    assert training.warmup_steps == 1000
    assert training.lr_scheduler_type.value == "cosine"
    assert training.per_device_train_batch_size == 16
    assert training.num_train_epochs == 5
    assert training.seed == 42


def _write(tmp_path, text) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_command_line_overrides_the_file(tmp_path):
    path = _write(tmp_path, "tiny_model: decoder\nlearning_rate: 0.1\n")
    run = load_config(path, ["--learning_rate", "0.5", "--output_dir", str(tmp_path / "out")])
    assert run.training.learning_rate == 0.5
    assert run.training.output_dir == str(tmp_path / "out")


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = _write(tmp_path, "tiny_model: decoder\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key 'learnig_rate'.*learning_rate"):
        load_config(path)


@pytest.mark.parametrize(
    "line, key",
    [
        ("learning_rate: fast", "learning_rate"),
        ("per_device_train_batch_size: 2.5", "per_device_train_batch_size"),
        ("train_all: 'yes'", "train_all"),
        ("mode: sequential", "mode"),
        ("lora_target_modules: q_proj", "lora_target_modules"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(tmp_path, line, key):
    path = _write(tmp_path, f"tiny_model: decoder\n{line}\n")
    with pytest.raises(ConfigError, match=rf"run\.yaml: key '{key}' must be"):
        load_config(path)


def test_missing_data_file_is_an_error_naming_key_and_path(tmp_path):
    missing = tmp_path / "nowhere" / "questions.json"
    path = _write(tmp_path, f"tiny_model: decoder\ntrain_dataset_dir: {missing}\n")
    with pytest.raises(ConfigError, match=r"train_dataset_dir: .*nowhere.* does not exist"):
        load_config(path)


def test_incomplete_raw_split_is_an_error(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text("{}")
    path = _write(tmp_path, f"tiny_model: decoder\ntrain_questions: {questions}\n")
    with pytest.raises(ConfigError, match="missing train_annotations, train_captions, train_image_dir"):
        load_config(path)


def test_a_model_is_required(tmp_path):
    with pytest.raises(ConfigError, match="model_name_or_path"):
        load_config(_write(tmp_path, "mode: sit\n"))


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [unclosed\n"))


def test_bare_names_resolve_in_configs_dir():
    assert resolve_config_path("vqa_sit.yaml") == CONFIG_DIR / "vqa_sit.yaml"
    assert resolve_config_path("vqa_sit") == CONFIG_DIR / "vqa_sit.yaml"
    with pytest.raises(ConfigError, match="not found.*shipped: .*quickstart.yaml"):
        resolve_config_path("no_such_config.yaml")


def test_evaluation_needs_only_the_eval_paths(tmp_path, monkeypatch):
    _materialise_data_paths(CONFIG_DIR / "vqa_sit.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    for train_file in (tmp_path / "data" / "vqav2").glob("*train2014*"):
        train_file.unlink()
    with pytest.raises(ConfigError, match="train_questions: .* does not exist"):
        load_config("vqa_sit.yaml")
    run = load_config("vqa_sit.yaml", data_roles=("eval",))
    assert run.data.eval_questions.endswith("v2_OpenEnded_mscoco_val2014_questions.json")


def test_templates_are_checked_when_the_config_loads(tmp_path):
    path = _write(tmp_path, "tiny_model: decoder\ntemplates:\n  sit_target: 'Caption: {caption} / {answer}'\n")
    with pytest.raises(ConfigError, match="templates: sit_target=.*cannot be split back"):
        load_config(path)
    path = _write(tmp_path, "tiny_model: decoder\ntemplates:\n  sit_instrction: 'Q: {question}'\n")
    with pytest.raises(ConfigError, match="templates: .*sit_instrction.*keys: baseline_instruction"):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("tiny_model: decoder\nmodel_name_or_path: Salesforce/instructblip-vicuna-7b\n", "both model_name_or_path"),
    ("tiny_model: decoder\nuse_lora: true\ntrain_all: true\n", "use_lora and train_all contradict"),
    ("tiny_model: decoder\nquantization_bit: 4\n", "quantization_bit needs a model loaded through from_pretrained"),
    ("model_name_or_path: m\nquantization_bit: 2\n", "quantization_bit must be 4 or 8"),
    ("model_name_or_path: m\nquantization_bit: 8\ntrain_all: true\n", "quantization_bit freezes the LLM"),
    ("model_type: causal_lm\nmodel_name_or_path: m\nquantization_bit: 4\n", "quantization_bit applies to model_type instructblip"),
    ("tiny_model: decoder\nmodel_dtype: bfloat16\nuse_cpu: true\n", "model_dtype bfloat16 needs bf16: true"),
])
def test_contradicting_settings_are_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


RECIPES = sorted(CONFIG_DIR.glob("vqa_*.yaml"))
IDENTITY_KEYS = {"mode", "model_type"}  # said in every recipe for the reader, whatever the default


def _declared_defaults() -> dict:
    defaults = {}
    for section in SECTIONS:
        for f in dataclasses.fields(section):
            if f.default is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default_factory())
    return defaults


@pytest.mark.parametrize("config_file", RECIPES, ids=lambda p: p.name)
def test_recipes_state_only_what_differs_from_the_paper_defaults(config_file):
    """One source of truth for the paper's recipe: the dataclass defaults. A recipe repeating one would drift."""
    defaults = _declared_defaults()
    values = yaml.safe_load(config_file.read_text())
    repeated = {k: v for k, v in values.items() if k not in IDENTITY_KEYS and k in defaults and defaults[k] == v}
    assert not repeated, f"{config_file.name} repeats defaults {repeated}: drop them (config.py holds the recipe)"


def _help_defaults(text: str, options: list[str]) -> dict[str, str]:
    """option -> the '(default: X)' argparse printed for it."""
    entries = {entry.split()[0]: " ".join(entry.split()) for entry in re.split(r"\n  (?=--)", text)}
    found = {}
    for option in options:
        match = re.search(r"\(default: ([^)]*)\)$", entries.get(f"--{option}", ""))
        assert match, f"--{option} and its default are not in the help text"
        found[option] = match.group(1)
    return found


def test_train_and_prepare_help_show_the_same_join_defaults():
    join_options = [f.name for f in dataclasses.fields(JoinOptions)]
    texts = [
        subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, check=True,
                       cwd=CONFIG_DIR.parent).stdout
        for command in (["train.py"], ["-m", "sit_vqa.apps.prepare"])
    ]
    train, prepare = (_help_defaults(text, join_options) for text in texts)
    assert train == prepare
    assert train["caption_policy"] == "random" and train["subset_seed"] == "42"


@pytest.mark.parametrize("line, key, value", [
    ("learning_rate: 1e-3", "learning_rate", 1e-3),  # YAML 1.1 reads 1e-3 (no dot) as a string
    ("weight_decay: '0.1'", "weight_decay", 0.1),
    ("max_instruction_length: '64'", "max_instruction_length", 64),
])
def test_numeric_strings_are_taken_for_numeric_keys(tmp_path, line, key, value):
    run = load_config(_write(tmp_path, f"tiny_model: decoder\n{line}\n"))
    section = run.training if hasattr(run.training, key) else run.model
    assert getattr(section, key) == value and type(getattr(section, key)) is type(value)


@pytest.mark.parametrize("line, key", [
    ("save_steps: -5", "save_steps"),
    ("logging_steps: 0", "logging_steps"),
    ("per_device_train_batch_size: 0", "per_device_train_batch_size"),
    ("gradient_accumulation_steps: -1", "gradient_accumulation_steps"),
    ("learning_rate: -1e-5", "learning_rate"),
    ("warmup_steps: -10", "warmup_steps"),
    ("max_steps: 0", "max_steps"),
    ("max_steps: -7", "max_steps"),
    ("save_total_limit: 0", "save_total_limit"),
    ("max_target_length: 0", "max_target_length"),
])
def test_impossible_values_are_refused_at_load(tmp_path, line, key):
    with pytest.raises(ConfigError, match=rf"run\.yaml: {key} must"):
        load_config(_write(tmp_path, f"tiny_model: decoder\n{line}\n"))


def test_a_directory_and_a_non_utf8_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; pass a YAML file"):
        load_config(tmp_path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tiny_model: decoder\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 25\)"):
        load_config(path)


# ------------------------------------------------------------------ parsing writes nothing; the sample step does


SAMPLE_FLAGS = ["--tiny_model", "decoder", "--sample_train_images", "2", "--sample_val_images", "1",
                "--sample_style", "simple"]


def test_loading_a_sample_config_writes_nothing_and_the_sample_step_makes_its_files(tmp_path, monkeypatch):
    from sit_vqa.samples.generated import ensure_config_sample

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    run = load_config(None, [*SAMPLE_FLAGS, "--sample_dir", "quick"])
    assert list(tmp_path.iterdir()) == []  # nothing in the current directory, nothing in the cache root
    sample = tmp_path / "cache" / "quick"
    assert run.data.sample_dir == str(sample)
    assert run.data.train_questions == str(sample / "v2_OpenEnded_mscoco_train2014_questions.json")
    assert run.data.eval_image_dir == str(sample / "val2014")
    assert ensure_config_sample(run) is True
    assert all(Path(run.data.raw_files(role)[key]).exists() for role in ("train", "eval") for key in RAW_FILE_KEYS)
    assert ensure_config_sample(run) is False  # made once
    shutil.rmtree(sample / "val2014")
    assert ensure_config_sample(run) is True  # a sample with a file gone is made again
    assert (sample / "val2014").is_dir()


def test_a_role_with_files_of_its_own_keeps_them_and_they_are_checked_at_load(tmp_path):
    missing = tmp_path / "nowhere" / "questions.json"
    with pytest.raises(ConfigError, match=r"eval_questions: .*nowhere.* does not exist"):
        load_config(None, [*SAMPLE_FLAGS, "--sample_dir", str(tmp_path / "s"), "--eval_questions", str(missing),
                           "--eval_annotations", str(missing), "--eval_captions", str(missing),
                           "--eval_image_dir", str(tmp_path)])
    assert not (tmp_path / "s").exists()


def test_relative_cache_paths_lie_under_the_cache_root_and_absolute_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "root"))
    data = load_config(None, [*SAMPLE_FLAGS, "--sample_dir", "samples/x"]).data
    assert (data.sample_dir, data.prepared_cache_dir) == (str(tmp_path / "root" / "samples" / "x"),
                                                          str(tmp_path / "root" / "prepared"))
    named = load_config(None, ["--tiny_model", "decoder", "--prepared_cache_dir", str(tmp_path / "mine")]).data
    assert named.prepared_cache_dir == str(tmp_path / "mine")
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "sit_vqa"


def test_no_module_mutates_a_frozen_dataclass():
    package = Path(__file__).resolve().parent.parent / "sit_vqa"
    mutating = [str(path.relative_to(package)) for path in package.rglob("*.py")
                if "object.__setattr__" in path.read_text(encoding="utf-8")]
    assert mutating == []


def test_templates_named_by_a_file_are_read_once_checked_at_parse(tmp_path):
    templates = tmp_path / "templates.yaml"
    templates.write_text("baseline_instruction: 'Q: {question} A:'\n")
    run = load_config(None, ["--tiny_model", "decoder", "--templates", str(templates)])
    templates.write_text("baseline_instruction: 'changed {question}'\n")  # the parsed config keeps what it read
    assert run.data.template_set.baseline_instruction == "Q: {question} A:"
    assert run.to_dict()["templates"]["baseline_instruction"] == "Q: {question} A:"
