"""Every command line, driven with bad input, exits 2 with an "error: ..." message that names the problem, and
never with a traceback."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
VAL_QUESTIONS = SAMPLE / "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_ANNOTATIONS = SAMPLE / "v2_mscoco_val2014_annotations.json"
SMALL_CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"  # data/sample, the smallest tiny model


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_clean_exit_2(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error:" in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


@pytest.fixture
def image_token_caption_config(tmp_path):
    """The quickstart with a COCO caption that holds the image token text."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    captions_path = data / "captions_train2014.json"
    captions = json.loads(captions_path.read_text())
    captions["annotations"][0]["caption"] = "A red circle <image> on white."
    captions_path.write_text(json.dumps(captions))
    config = (REPO / "tests" / "configs" / "bundled_sample.yaml").read_text().replace("data/sample/", f"{data}/")
    config = "".join(line for line in config.splitlines(keepends=True)  # set again below: a key is written once
                     if not line.startswith(("output_dir:", "caption_policy:")))
    path = tmp_path / "run.yaml"
    path.write_text(config + f"output_dir: {tmp_path / 'run'}\nprepared_cache_dir: {tmp_path / 'cache'}\n"
                    "caption_policy: all\nmax_steps: 1\n")
    return path


TRAIN_CASES = {
    "missing config": (["--config", "no_such.yaml"], ["no_such.yaml not found"]),
    "config is a directory": (["--config", "configs"], ["configs"]),
    "unknown key": (["--config", "quickstart.yaml", "--learning_rte", "1e-3"], ["learning_rte"]),
    "abbreviated key": (["--config", "quickstart.yaml", "--learning_rat", "1e-3"], ["learning_rat"]),
    "impossible subset": (["--config", "quickstart.yaml", "--subset_questions", "0"], ["subset_questions"]),
    "both subsets": (["--config", "quickstart.yaml", "--subset_questions", "2", "--subset_images", "2"], ["not both"]),
}


@pytest.mark.parametrize("case", TRAIN_CASES, ids=list(TRAIN_CASES))
def test_train_py_bad_input(case, tmp_path):
    args, words = TRAIN_CASES[case]
    assert_clean_exit_2(run("train.py", *args, "--output_dir", str(tmp_path / "run")), *words)


@pytest.mark.parametrize("args, words", [
    (["--learning_rat", "1e-3"], ["command line: unknown option --learning_rat (did you mean: --learning_rate?)"]),
    (["--learning_rate", "fast"], ["command line: argument --learning_rate", "invalid float value: 'fast'"]),
    (["--subset_questions", "0"], ["command line --subset_questions: subset_questions must be a positive integer"]),
], ids=["unknown flag", "bad value", "impossible value"])
def test_train_py_blames_a_bad_flag_on_the_command_line_not_on_the_yaml_file(args, words, tmp_path):
    result = run("train.py", "--config", "quickstart.yaml", *args, "--output_dir", str(tmp_path / "run"))
    assert_clean_exit_2(result, *words)
    assert "quickstart.yaml" not in result.stderr


@pytest.mark.parametrize("command, flag", [("train.py", "--train_questions"), ("evaluate.py", "--eval_questions")])
def test_a_missing_path_given_on_the_command_line_is_blamed_on_the_flag(command, flag, tmp_path):
    result = run(command, "--config", str(SMALL_CONFIG), flag, str(tmp_path / "nope.json"),
                 "--output_dir" if command == "train.py" else "--out", str(tmp_path / "out"))
    assert_clean_exit_2(result, f"command line {flag}: {tmp_path / 'nope.json'} does not exist")
    assert SMALL_CONFIG.name not in result.stderr


@pytest.mark.parametrize("flag, close", [("--limt", "--limit"), ("--learning_rat", "--learning_rate")])
def test_evaluate_py_unknown_option_points_at_its_own_help(flag, close, tmp_path):
    result = run("evaluate.py", "--config", "quickstart.yaml", flag, "2", "--out", str(tmp_path / "eval"))
    assert_clean_exit_2(result, f"unknown option {flag} (did you mean: {close}", "python evaluate.py --help lists")
    assert "python train.py --help lists" not in result.stderr


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only filesystem (root: a read-only tmpfs; others: a read-only folder)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "permission denied", "Pick a location you may write to"
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("a read-only folder needs a non-root user or a read-only mount")
    yield folder, "the filesystem is read-only", "Pick a location on a writable filesystem"
    subprocess.run(["umount", str(folder)], check=True)


def test_a_write_error_says_the_cause_found_and_its_fix(read_only_folder, tmp_path):
    folder, cause, fix = read_only_folder
    evaluate = ["evaluate.py", "--config", "tests/configs/bundled_sample.yaml", "--zero-shot", "--limit", "2"]
    read_only = run(*evaluate, "--out", str(folder / "eval"))
    assert_clean_exit_2(read_only, f"cannot write {folder / 'eval'}", cause, fix)
    (tmp_path / "a_file").write_text("mine")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "eval"):
        under_a_file = run(*evaluate, "--out", str(out))
        assert_clean_exit_2(under_a_file, f"{tmp_path / 'a_file'} is a file, not a folder", "Move that file away")
        assert "Free space" not in read_only.stderr + under_a_file.stderr
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_write_into_a_missing_folder_names_that_folder(tmp_path):
    from sit_vqa.files import write_error

    target = tmp_path / "gone" / "deeper" / "report.json"
    with pytest.raises(FileNotFoundError) as failed:
        target.open("w")
    message = str(write_error(target, failed.value))
    assert f"the folder {tmp_path / 'gone'} does not exist. Create the missing folder" in message
    assert "Free space" not in message


POOL_CASES = {
    "a phrasing without {question}": ("sit:\n  - \"Describe the image, then answer.\"\n",
                                      ["sit: 'Describe the image, then answer.' has no {question} field"]),
    "an empty task list": ("sit: []\nbaseline:\n  - \"Answer: {question}\"\n",
                           ["sit must be a non-empty list", "got []"]),
    "no phrasings for the mode's task": ("baseline:\n  - \"Answer the question.\\nQuestion: {question}\"\n",
                                         ["has no sit phrasings, which mode sit writes"]),
}


@pytest.mark.parametrize("case", POOL_CASES, ids=list(POOL_CASES))
def test_an_instruction_pool_that_would_be_silently_ignored_is_refused(case, tmp_path):
    text, words = POOL_CASES[case]
    pool = tmp_path / "pool.yaml"
    pool.write_text(text)
    result = run("train.py", "--config", str(SMALL_CONFIG), "--instruction_pool", str(pool),
                 "--output_dir", str(tmp_path / "run"))
    assert_clean_exit_2(result, str(pool), *words)
    assert not (tmp_path / "run").exists()


def test_use_lora_with_train_all_is_a_contradiction(tmp_path):
    result = run("train.py", "--config", "text_sit.yaml", "--use_lora", "true", "--train_all", "true",
                 "--output_dir", str(tmp_path / "run"))
    assert_clean_exit_2(result, "use_lora and train_all contradict each other")


def test_a_yaml_key_written_twice_names_the_file_the_key_and_the_line(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text(SMALL_CONFIG.read_text() + "learning_rate: 0.5\n")
    first = next(number for number, line in enumerate(SMALL_CONFIG.read_text().splitlines(), 1)
                 if line.startswith("learning_rate:"))
    last = len(config.read_text().splitlines())
    result = run("train.py", "--config", str(config), "--output_dir", str(tmp_path / "run"))
    assert_clean_exit_2(result, str(config), f"key 'learning_rate' is written twice (first on line {first})",
                        f"line {last}")


def test_compare_refuses_options_it_would_ignore(tmp_path):
    result = run("evaluate.py", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--limit", "5",
                 "--task", "gqa", "--config", "quickstart.yaml")
    assert_clean_exit_2(result, "it would ignore --config, --limit, --task")


def test_train_py_refuses_a_caption_with_the_image_token(image_token_caption_config):
    result = run("train.py", "--config", str(image_token_caption_config))
    assert_clean_exit_2(result, "<image>", "question_id=")


EVALUATE_CASES = {
    "not a checkpoint": (["--checkpoint", "data"], ["not a sit-vqa checkpoint"]),
    "limit 0": (["--limit", "0"], ["limit must be a positive integer"]),
    "missing config": (["--config", "no_such.yaml"], ["no_such.yaml not found"]),
    "compare a missing run": (["--compare", "no_such_run"], ["no_such_run"]),
}


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=list(EVALUATE_CASES))
def test_evaluate_py_bad_input(case, tmp_path):
    args, words = EVALUATE_CASES[case]
    config = [] if "--config" in args or "--compare" in args else ["--config", "quickstart.yaml"]
    assert_clean_exit_2(run("evaluate.py", *config, *args, "--out", str(tmp_path / "eval")), *words)


def test_prepare_bad_input(tmp_path):
    common = ["--captions", str(SAMPLE / "captions_val2014.json"), "--image-dir", str(SAMPLE / "val2014"),
              "--out", str(tmp_path / "out")]
    swapped = run("-m", "sit_vqa.apps.prepare", "--questions", str(VAL_ANNOTATIONS), "--annotations", str(VAL_QUESTIONS),
                  *common)
    assert_clean_exit_2(swapped, "this is an annotations file", "check the --questions argument")
    missing = run("-m", "sit_vqa.apps.prepare", "--questions", str(tmp_path / "nope.json"), "--annotations",
                  str(VAL_ANNOTATIONS), *common)
    assert_clean_exit_2(missing, "nope.json")
    bad_choice = run("-m", "sit_vqa.apps.prepare", "--questions", str(VAL_QUESTIONS), "--annotations",
                     str(VAL_ANNOTATIONS), *common, "--mode", "both")
    assert_clean_exit_2(bad_choice, "--mode")


@pytest.mark.parametrize("flag, words", [
    ("--mdoe", ["unknown option --mdoe (did you mean: --mode?)"]),
    ("--check_image", ["unknown option --check_image (did you mean: --check_images?)"]),  # no prefix match
    ("--subset-question", ["unknown option --subset-question (did you mean: --subset-questions"]),
])
def test_prepare_names_an_unknown_flag_and_the_nearest_one(flag, words, tmp_path):
    result = run("-m", "sit_vqa.apps.prepare", "--questions", str(VAL_QUESTIONS), "--annotations", str(VAL_ANNOTATIONS),
                 "--captions", str(SAMPLE / "captions_val2014.json"), "--image-dir", str(SAMPLE / "val2014"),
                 "--out", str(tmp_path / "out"), flag, "1")
    assert_clean_exit_2(result, *words)
    assert not (tmp_path / "out").exists()


def scorer_inputs(tmp_path: Path, scorer: str) -> list[str]:
    """The arguments of a scorer run that succeeds: the bundled sample with its own answers as predictions."""
    if scorer == "vqa":
        answers = [{"question_id": a["question_id"], "answer": a["multiple_choice_answer"]}
                   for a in json.loads(VAL_ANNOTATIONS.read_text())["annotations"]]
        (tmp_path / "results.json").write_text(json.dumps(answers))
        return ["--questions", str(VAL_QUESTIONS), "--annotations", str(VAL_ANNOTATIONS),
                "--results", str(tmp_path / "results.json")]
    if scorer == "gqa":
        questions = REPO / "data" / "gqa_sample" / "testdev_balanced_questions.json"
        answers = [{"questionId": qid, "prediction": q["answer"]} for qid, q in json.loads(questions.read_text()).items()]
        (tmp_path / "results.json").write_text(json.dumps(answers))
        return ["--questions", str(questions), "--results", str(tmp_path / "results.json")]
    data = REPO / "data" / "xquad_sample" / "xquad.en.json"
    answers = {qa["id"]: qa["answers"][0]["text"] for article in json.loads(data.read_text())["data"]
               for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    (tmp_path / "predictions.json").write_text(json.dumps(answers))
    return ["--data", str(data), "--predictions", str(tmp_path / "predictions.json")]


@pytest.mark.parametrize("scorer", ["vqa", "gqa", "squad"])
def test_metric_cli_whose_reader_stops_early_exits_2_without_a_traceback(scorer, tmp_path):
    args = ["-m", f"sit_vqa.metrics.{scorer}", *scorer_inputs(tmp_path, scorer)]
    scored = run(*args)
    assert scored.returncode == 0 and scored.stdout, scored.stderr[-2000:]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the report is written, as `| head -0` leaves it
    try:
        closed = subprocess.run([sys.executable, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, timeout=300)
    finally:
        os.close(write_end)
    assert_clean_exit_2(closed, "stdout was closed", "--out")


def test_metric_cli_bad_input(tmp_path):
    results = tmp_path / "results.json"
    results.write_text('[{"question_id": "one", "answer": "red"}]')
    result = run("-m", "sit_vqa.metrics.vqa", "--questions", str(VAL_QUESTIONS), "--annotations",
                 str(VAL_ANNOTATIONS), "--results", str(results))
    assert_clean_exit_2(result, str(results), "question_id")


def test_sample_generator_bad_input(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_clean_exit_2(run("-m", "sit_vqa.samples.scenes", "--out", str(blocker)), str(blocker))


# ------------------------------------------------------------------------ bad files a new user may have


def edited_copy(source: Path, target: Path, edit) -> Path:
    document = json.loads(source.read_text())
    edit(document)
    target.write_text(json.dumps(document))
    return target


def test_ids_beyond_int64_blank_captions_and_an_empty_alpaca_file(tmp_path):
    def huge_id(document):
        document["questions"][3]["question_id"] = 2**70

    def blank(document):
        for annotation in document["annotations"]:
            annotation["caption"] = "  "

    questions = edited_copy(VAL_QUESTIONS, tmp_path / "questions.json", huge_id)
    captions = edited_copy(SAMPLE / "captions_val2014.json", tmp_path / "captions.json", blank)
    files = {"--questions": VAL_QUESTIONS, "--annotations": VAL_ANNOTATIONS,
             "--captions": SAMPLE / "captions_val2014.json", "--image-dir": SAMPLE / "val2014"}

    def prepare(**replaced):
        chosen = {**files, **{f"--{k}": v for k, v in replaced.items()}}
        return run("-m", "sit_vqa.apps.prepare", *[str(x) for pair in chosen.items() for x in pair],
                   "--out", str(tmp_path / "out"))

    assert_clean_exit_2(prepare(questions=questions), f"{questions}: $.questions[3].question_id is {2**70}",
                        "64-bit")
    assert_clean_exit_2(prepare(captions=captions), f"{captions}: all", "captions are blank")
    evaluated = run("evaluate.py", "--config", str(SMALL_CONFIG), "--zero-shot", "--eval_questions", str(questions),
                    "--out", str(tmp_path / "eval"))
    assert_clean_exit_2(evaluated, "$.questions[3].question_id")
    empty = tmp_path / "alpaca.json"
    empty.write_text("[]")
    trained = run("train.py", "--config", "text_sit.yaml", "--text_data", str(empty), "--output_dir",
                  str(tmp_path / "run"), "--max_steps", "1")
    assert_clean_exit_2(trained, f"{empty}: the list of records is empty")


def keep_one_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    first = sorted(tensors)[0]
    save_file({first: tensors[first]}, str(path))


IMAGE = SAMPLE / "val2014" / "COCO_val2014_000000325422.jpg"


def demo(checkpoint: Path, *extra: str) -> subprocess.CompletedProcess:
    return run("-m", "sit_vqa.apps.demo", "--checkpoint", str(checkpoint), "--image", str(IMAGE), "--question",
               "What color is the shape?", "--device", "cpu", "--max-new-tokens", "4", *extra)


def test_a_checkpoint_missing_trained_tensors_is_refused_unless_a_partial_load_is_asked(quickstart_run, tmp_path):
    checkpoint = tmp_path / "final"
    shutil.copytree(quickstart_run / "final", checkpoint)
    keep_one_tensor(checkpoint / "trainable.safetensors")
    missing = "trained tensors are missing, e.g."
    evaluated = run("evaluate.py", "--config", str(SMALL_CONFIG), "--checkpoint", str(checkpoint), "--limit", "2",
                    "--out", str(tmp_path / "eval"))
    assert_clean_exit_2(evaluated, missing, "--allow-partial-load")
    assert_clean_exit_2(demo(checkpoint), missing, "--allow-partial-load")
    partial = demo(checkpoint, "--allow-partial-load")  # the option the message names exists on the demo too
    assert partial.returncode == 0 and "answer:" in partial.stdout, partial.stderr[-2000:]


def test_final_copied_alone_answers_and_a_moved_base_model_is_named(quickstart_run, tmp_path):
    checkpoint = tmp_path / "elsewhere" / "final"
    shutil.copytree(quickstart_run / "final", checkpoint)
    base = tmp_path / "base_model"
    shutil.move(checkpoint / "base_model", base)
    assert_clean_exit_2(demo(checkpoint), "base model is missing", str(checkpoint / "base_model"), "--base-model")
    answered = demo(checkpoint, "--base-model", str(base))
    assert answered.returncode == 0 and "answer:" in answered.stdout, answered.stderr[-2000:]
