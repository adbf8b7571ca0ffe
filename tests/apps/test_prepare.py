"""The `python -m sit_vqa.apps.prepare` command line: one real subprocess run, the rest through main(argv)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.config import DataArguments
from sit_vqa.data.prepared import REPORT_FILE, load_prepared
from sit_vqa.apps.prepare import main, make_parser
from tests.data.conftest import build_official_data, write_official_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path):
    return write_official_files(tmp_path / "inputs", build_official_data())


def cli_args(files, out, *extra):
    return ["--questions", str(files.questions), "--annotations", str(files.annotations),
            "--captions", str(files.captions), "--image-dir", str(files.image_dir), "--out", str(out), *extra]


def test_module_runs_as_a_command(files, tmp_path):
    out = tmp_path / "prepared"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "sit_vqa.apps.prepare", *cli_args(files, out, "--mode", "sit")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "questions read 6, joined 6" in result.stdout and f"saved to {out}" in result.stdout
    dataset, report = load_prepared(out)
    assert dataset.num_rows == 6 and set(dataset["kind"]) == {"sit"}
    assert json.loads((out / REPORT_FILE).read_text())["records"] == {"sit": 6}


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--questions", "--annotations", "--captions", "--image-dir", "--out", "--mode", "--subset-questions",
                   "--subset-images", "--subset-seed", "--caption-policy", "--check-images", "--answer-policy",
                   "--mixed-sit-fraction", "--templates"):
        assert option in text
    assert "sit" in text and "multitask" in text and "longest" in text


def test_options_reach_the_join(files, tmp_path, capsys):
    out = tmp_path / "prepared"
    code = main(cli_args(files, out, "--mode", "mixed", "--caption-policy", "longest", "--answer-policy",
                         "most_frequent", "--subset-images", "2", "--subset-seed", "7", "--mixed-sit-fraction", "0.5",
                         "--check-images"))
    assert code == 0
    _, report = load_prepared(out)
    assert report.options == {**report.options, "mode": "mixed", "caption_policy": "longest",
                              "answer_policy": "most_frequent", "subset_images": 2, "subset_questions": None,
                              "subset_seed": 7, "mixed_sit_fraction": 0.5, "check_images": True}
    assert report.images_checked == 2 and report.subset["requested"] == 2
    assert "VQAv2 x COCO join" in capsys.readouterr().out


def test_defaults(files, tmp_path):
    assert main(cli_args(files, tmp_path / "out")) == 0
    _, report = load_prepared(tmp_path / "out")
    # the same defaults as a train.py config: both come from JoinOptions
    assert (report.mode, report.options["caption_policy"], report.options["answer_policy"]) == (
        "sit", DataArguments.caption_policy, DataArguments.answer_policy) == ("sit", "random", "multiple_choice_answer")
    assert report.options["subset_seed"] == DataArguments.subset_seed == 42
    assert report.options["check_images"] is False and report.subset is None


def test_templates_file(files, tmp_path):
    templates = tmp_path / "templates.yaml"
    templates.write_text('sit_target: "Caption: {caption}\\nAnswer: {answer}"\n')
    assert main(cli_args(files, tmp_path / "out", "--templates", str(templates), "--caption-policy", "first")) == 0
    dataset, _ = load_prepared(tmp_path / "out")
    assert dataset[0]["target"] == "Caption: A plate of food.\nAnswer: rice"


@pytest.mark.parametrize(("content", "message"), [
    ("sit_answer: '{answer}'\n", "keys among"),
    ("- a list\n", "expected a mapping"),
    ("sit_target: '{description}'\n", "unknown field"),
    ("sit_target: [unclosed\n", "cannot read templates file"),
])
def test_bad_templates_file_is_a_clear_error(files, tmp_path, capsys, content, message):
    templates = tmp_path / "templates.yaml"
    templates.write_text(content)
    assert main(cli_args(files, tmp_path / "out", "--templates", str(templates))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and str(templates) in err


def test_bad_input_exits_2_with_a_message_not_a_traceback(files, tmp_path, capsys):
    files.annotations.write_text('{"annotations": [{"question_id": 1}]}')
    assert main(cli_args(files, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(files.annotations) in err and "$.annotations[0]" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_empty_or_impossible_subsets_are_clear_errors(files, tmp_path, capsys):
    assert main(cli_args(files, tmp_path / "out", "--subset-questions", "0")) == 2
    assert "subset_questions must be a positive integer" in capsys.readouterr().err
    assert main(cli_args(files, tmp_path / "out", "--subset-images", "99")) == 2
    assert "only 3 images" in capsys.readouterr().err


def test_argument_errors_exit_2(files, tmp_path, capsys):
    for extra in (["--mode", "both"], ["--caption-policy", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(cli_args(files, tmp_path / "out", *extra))
        assert exit_.value.code == 2
    assert main(cli_args(files, tmp_path / "out", "--subset-questions", "2", "--subset-images", "1")) == 2
    assert "subset_questions or subset_images, not both" in capsys.readouterr().err


def test_readme_prepare_commands_parse():
    readme = (REPO / "README.md").read_text().replace("\\\n", " ")  # join continued lines
    commands = re.findall(r"python -m sit_vqa\.apps\.prepare ([^&\n`]+)", readme)
    assert commands, "the README shows the prepare command"
    for command in commands:
        args = make_parser().parse_args(shlex.split(command))
        assert args.questions.name.endswith("_questions.json") and args.out


def test_a_mistyped_or_abbreviated_flag_is_refused_before_anything_is_written(files, tmp_path, capsys):
    out = tmp_path / "prepared"
    for flag, nearest in (("--mdoe", "--mode"), ("--caption", "--captions"), ("--subset-image", "--subset-images")):
        with pytest.raises(SystemExit) as exited:
            main(cli_args(files, out, flag, "1"))
        assert exited.value.code == 2
        assert f"unknown option {flag} (did you mean: {nearest}" in capsys.readouterr().err
    assert not out.exists()
