"""Faults a training run must survive: kill -9 at several moments (during saves too), damaged checkpoints,
failed writes (a file-size limit, a full or read-only filesystem), a failed run's leftovers, a finished run
resumed. Real processes, real signals, real files; nothing here is mocked."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from sit_vqa.modeling import checkpoint as ckpt
from sit_vqa.config import load_config
from sit_vqa.samples.generated import ensure_config_sample
from sit_vqa.errors import CheckpointError, ConfigError
from sit_vqa.training.run import run_training
from sit_vqa.training.trainer import NonFiniteLossError

REPO = Path(__file__).resolve().parents[2]
FAULT_RUN = Path(__file__).resolve().parent / "fault_run.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# logging every 3 steps, saving every 4: a checkpoint falls between two logs, so the loss summed since the
# last log must survive the resume too
# hidden 64 (the quickstart's is 128): faults need no learning, and at this size the base model's weights stay
# smaller than the first optimizer state (the file-size-limit test puts its limit between the two)
RUN = ["--config", "quickstart.yaml", "--report_to", "none", "--subset_questions", "24", "--train_all", "false",
       "--tiny_hidden_size", "64",
       "--per_device_train_batch_size", "4", "--logging_steps", "3", "--save_steps", "4", "--save_total_limit", "2",
       "--overwrite_output_dir", "false"]
TIMING = {"samples_per_second", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def train_command(moment: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(FAULT_RUN), moment, *RUN, "--output_dir", str(out / "run"),
            "--prepared_cache_dir", str(out / "cache"), *extra]


def run_until_killed(moment: str, out: Path, *extra: str) -> None:
    """Start a training process, wait until it reaches `moment`, and kill it with SIGKILL."""
    paused = out / "run" / "PAUSED"
    paused.unlink(missing_ok=True)
    process = subprocess.Popen(train_command(moment, out, *extra), cwd=REPO, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not paused.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {moment}: {process.stderr.read()[-3000:]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    paused.unlink()


def run_to_the_end(out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command("none", out, *extra), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def log_rows(run_dir: Path) -> list[dict]:
    """The training log without throughput figures (they vary) and resume markers."""
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows if "resumed_from" not in row]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / ckpt.WEIGHTS_NAME)


@pytest.mark.slow
def test_kill_9_at_several_moments_then_resume_repeats_the_uninterrupted_run(tmp_path):
    steps = ("--max_steps", "16")
    run_to_the_end(tmp_path / "whole", *steps)

    cut = tmp_path / "killed"
    run_until_killed("logged@6", cut, *steps)  # between saves: checkpoint-4 is the latest
    assert ckpt.latest_checkpoint(cut / "run").name == "checkpoint-4"
    run_until_killed("scheduler@8", cut, *steps, "--resume")  # checkpoint-8 half written
    assert ckpt.latest_checkpoint(cut / "run").name == "checkpoint-4"
    run_until_killed("publish@12", cut, *steps, "--resume")  # checkpoint-12 complete, not yet renamed
    assert ckpt.latest_checkpoint(cut / "run").name == "checkpoint-8"
    run_until_killed("final@16", cut, *steps, "--resume")  # training done, final/ being written
    assert not (cut / "run" / "final").exists()
    run_to_the_end(cut, *steps, "--resume")

    whole, killed = tmp_path / "whole" / "run", cut / "run"
    assert log_rows(killed) == log_rows(whole)  # every loss, each step once, and train_loss: bit for bit
    assert [row["step"] for row in log_rows(killed) if "loss" in row] == [3, 6, 9, 12, 15]
    expected, resumed = final_weights(whole), final_weights(killed)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert ckpt.read_manifest(killed / "final").global_step == 16
    assert not list((killed / ".checkpoint-staging").glob("checkpoint-*")), "a partial checkpoint was left"


def tensorboard_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps TensorBoard shows for `tag`, over every run under `log_dir` (its own reader: purges applied)."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(log_dir))
    runs.Reload()
    return sorted(event.step for run, tags in runs.Runs().items() if tag in tags["scalars"]
                  for event in runs.Scalars(run, tag))


def test_tensorboard_shows_each_step_once_after_a_kill_and_resume(tmp_path):
    """Killed after logging step 6 (the latest checkpoint is step 4): the resumed run logs step 6 again, and
    TensorBoard must show it once: the resumed writer purges the killed segment's events from step 4 on."""
    steps = ("--max_steps", "8", "--report_to", "tensorboard")
    run_until_killed("logged@6", tmp_path, *steps)
    log_dir = tmp_path / "run" / "runs"
    assert tensorboard_steps(log_dir, "train/loss") == [3, 6]  # what the killed segment wrote
    run_to_the_end(tmp_path, *steps, "--resume")
    assert tensorboard_steps(log_dir, "train/loss") == [3, 6]


# ------------------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory):
    """A finished 4-step run (checkpoint-2, checkpoint-4, final) and its final weights."""
    out = tmp_path_factory.mktemp("four_steps")
    run_training(quick_config(out / "run", out / "cache", "--max_steps", "4"))
    return out


def quick_config(run_dir: Path, cache: Path, *extra: str):
    overrides = [*RUN[2:], "--logging_steps", "1", "--save_steps", "2", "--save_total_limit", "5",
                 "--output_dir", str(run_dir), "--prepared_cache_dir", str(cache), *extra]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        config = load_config(REPO / "configs" / "quickstart.yaml", overrides)
    ensure_config_sample(config)
    return config


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def keep_one_tensor(path: Path) -> None:
    tensors = load_file(path)
    first = sorted(tensors)[0]
    save_file({first: tensors[first]}, str(path))


DAMAGE = {
    "trainer_state.json truncated": (lambda d: truncate(d / "trainer_state.json"), "trainer_state.json is damaged"),
    "trainer_state.json empty": (lambda d: (d / "trainer_state.json").write_text(""), "trainer_state.json is damaged"),
    "trainer_state.json missing": (lambda d: (d / "trainer_state.json").unlink(), "trainer_state.json is missing"),
    "optimizer.pt truncated": (lambda d: truncate(d / "optimizer.pt"), "optimizer.pt is truncated"),
    "weights cut to one tensor": (lambda d: keep_one_tensor(d / ckpt.WEIGHTS_NAME), "trained tensor(s) missing"),
    "weights truncated": (lambda d: truncate(d / ckpt.WEIGHTS_NAME), "is unreadable"),
}


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_resume_skips_a_damaged_newest_checkpoint_and_still_repeats_the_run(case, four_step_run, tmp_path, caplog):
    damage, reason = DAMAGE[case]
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    shutil.rmtree(run_dir / "final")
    damage(run_dir / "checkpoint-4")

    with caplog.at_level("WARNING"):
        final = run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "4", "--resume"))
    assert f"skipping {run_dir / 'checkpoint-4'}: " in caplog.text and reason in caplog.text, caplog.text
    assert (run_dir / "damaged_checkpoints" / "checkpoint-4").is_dir()
    expected = load_file(four_step_run / "run" / "final" / ckpt.WEIGHTS_NAME)
    resumed = load_file(final / ckpt.WEIGHTS_NAME)
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert log_rows(run_dir) == log_rows(four_step_run / "run")


def test_resume_with_no_intact_checkpoint_is_an_error_naming_each(four_step_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    truncate(run_dir / "checkpoint-4" / "optimizer.pt")
    (run_dir / "checkpoint-2" / "trainer_state.json").write_text("")
    result = subprocess.run(
        [sys.executable, "train.py", *RUN, "--output_dir", str(run_dir), "--max_steps", "4", "--resume",
         "--prepared_cache_dir", str(four_step_run / "cache")],
        cwd=REPO, env=ENV, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: --resume: no intact checkpoint" in result.stderr
    assert "checkpoint-4: optimizer.pt is truncated" in result.stderr
    assert "checkpoint-2: trainer_state.json is damaged" in result.stderr


def test_resuming_a_finished_run_trains_no_further_step(four_step_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    before = (run_dir / "train_log.jsonl").read_text()
    run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "4", "--resume"))
    shutil.rmtree(run_dir / "final")  # killed after the last checkpoint, before final/ was written
    final = run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "4", "--resume"))
    assert not (run_dir / "checkpoint-5").exists()
    assert ckpt.read_manifest(final).global_step == 4
    assert (run_dir / "train_log.jsonl").read_text() == before


# ----------------------------------------------------------------------------------------- failed writes


def fsize_limit(limit: int):
    """preexec_fn: a file-size limit; SIGXFSZ ignored, so a write past it fails with EFBIG instead of killing."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def train_process(out: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "train.py", *RUN, "--output_dir", str(out / "run"), "--max_steps", "4",
               "--logging_steps", "1", "--save_steps", "2", "--prepared_cache_dir", str(out / "cache"), *extra]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, **kwargs)


def assert_write_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr[result.stderr.index("error: "):]
    for word in words:
        assert word in message, (word, message)


def test_a_file_size_limit_during_a_save_is_a_clear_error_and_leaves_nothing_partial(tmp_path, four_step_run):
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")  # the join's cache is written before the limit bites
    # a limit between the two largest files: the base model's weights fit, the first optimizer state does not
    checkpoint = four_step_run / "run" / "checkpoint-2"
    base_size = (checkpoint / ckpt.BASE_MODEL_DIR / "model.safetensors").stat().st_size
    optimizer_size = (checkpoint / "optimizer.pt").stat().st_size
    assert base_size < optimizer_size
    result = train_process(tmp_path, preexec_fn=fsize_limit((base_size + optimizer_size) // 2))
    assert_write_error(result, f"cannot write {tmp_path / 'run' / 'checkpoint-2'}",
                       "a file-size limit", "no checkpoint was written yet")
    run_dir = tmp_path / "run"
    assert not list(run_dir.glob("checkpoint-*")) and not list((run_dir / ".checkpoint-staging").glob("checkpoint-*"))
    assert not list(run_dir.rglob("*.partial"))
    # the failed run's leftovers do not block the next fresh run in the same directory
    assert train_process(tmp_path).returncode == 0


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/sit-vqa-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
    subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return mounted.returncode == 0


@pytest.fixture
def small_filesystem(tmp_path):
    """A real tmpfs of a given size (needs root with CAP_SYS_ADMIN, else the test is skipped)."""
    if not can_mount():
        pytest.skip("mounting a small filesystem needs root (CAP_SYS_ADMIN)")
    mounts = []

    def mount(size_kb: int, *options: str) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size_kb}k", *options]), "tmpfs", str(point)],
                       check=True)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=True)


def test_a_full_disk_names_the_last_intact_checkpoint(tmp_path, four_step_run, small_filesystem):
    checkpoint = four_step_run / "run" / "checkpoint-2"
    checkpoint_kb, base_kb = (sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) // 1024
                              for d in (checkpoint, checkpoint / ckpt.BASE_MODEL_DIR))
    disk = small_filesystem(base_kb + int(checkpoint_kb * 1.5))  # the run's base model and one checkpoint fit
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")
    result = train_process(tmp_path, "--output_dir", str(disk / "run"), "--save_total_limit", "5")
    assert_write_error(result, f"cannot write {disk / 'run' / 'checkpoint-4'}", "no space left on the device",
                       f"the last intact checkpoint is {disk / 'run' / 'checkpoint-2'}", "--resume")
    assert not list((disk / "run" / ".checkpoint-staging").glob("checkpoint-*"))
    ckpt.load_checkpoint(disk / "run" / "checkpoint-2")


def test_a_read_only_output_directory_is_a_clear_error(tmp_path, four_step_run):
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")
    out = tmp_path / "run"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through any file mode: make the filesystem itself read-only
        if not can_mount():
            pytest.skip("a read-only directory needs a non-root user or a read-only mount")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(out)], check=True)
        cause = "the filesystem is read-only"
    else:
        out.chmod(0o555)
        cause = "permission denied"
    try:
        result = train_process(tmp_path)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)], check=True)
        out.chmod(0o755)
    assert_write_error(result, f"cannot write {out}", cause, "no checkpoint was written yet")


# ----------------------------------------------------------------------------------- a failed run's leftovers


class PoisonWeights(TrainerCallback):
    """Makes the first step's loss NaN: the run stops (NonFiniteLossError) before any checkpoint."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.query_tokens.fill_(float("nan"))


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_the_directory(tmp_path, four_step_run):
    run_dir = tmp_path / "run"
    for resume in ([], ["--resume"]):  # a fresh run, and --resume (which finds nothing to resume: starts afresh)
        with pytest.raises(NonFiniteLossError):
            run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2"), callbacks=[PoisonWeights()])
        assert (run_dir / "data_report.json").is_file() and not list(run_dir.glob("checkpoint-*"))
        final = run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2", *resume))
        assert ckpt.read_manifest(final).global_step == 2
        assert [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()] == [1, 2, 2]
        shutil.rmtree(run_dir)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_a_fresh_run_removes_only_what_a_run_listed_and_never_a_users_files(tmp_path, four_step_run):
    """A user's files beside a failed run's leftovers: refused (overwrite too), every byte kept; once the user's
    files are moved out, the next run clears the leftovers. Old code removed runs/ and base_model/ by name."""
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError):
        run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2"), callbacks=[PoisonWeights()])
    leftovers = {path.name for path in run_dir.iterdir()}
    assert {"data_report.json", "run_config.json", ".sit_vqa_run.json"} <= leftovers, leftovers
    user_files = {"runs/my_old_experiment/results.txt": b"accuracy 71.3\n", "base_model/model.bin": b"\x00\x01weights"}
    for name, data in user_files.items():
        (run_dir / name).parent.mkdir(parents=True)
        (run_dir / name).write_bytes(data)
    before = snapshot(run_dir)
    for overwrite in ("false", "true"):
        with pytest.raises(ConfigError) as refused:
            run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2",
                                      "--overwrite_output_dir", overwrite))
        message = str(refused.value)
        for words in (str(run_dir), "base_model/", "runs/", "another --output_dir", "move those files out"):
            assert words in message, (words, message)
        assert snapshot(run_dir) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("runs", "base_model"):
        shutil.move(run_dir / name, mine / name)
    run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2"))
    assert [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()] == [1, 2, 2]
    assert snapshot(mine) == user_files


def test_the_marker_lists_only_what_a_run_wrote(tmp_path, four_step_run):
    """What the marker of a finished run lists, and a directory from before the marker (or with a user's file
    added to a run) is refused rather than cleared."""
    marker = json.loads((four_step_run / "run" / ".sit_vqa_run.json").read_text())
    assert set(marker["entries"]) == {"checkpoint-2", "checkpoint-4", "final", ".checkpoint-staging",
                                      "data_report.json", "run_config.json", "train_log.jsonl",
                                      "unreadable_images.jsonl"}
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / ".final.0123456789ab.partial").mkdir()  # a temporary of a listed name is the run's
    with pytest.raises(ConfigError, match=r"holds files no sit-vqa run recorded writing there \(notes.txt\)"):
        run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2", "--overwrite_output_dir", "true"))
    (run_dir / ".sit_vqa_run.json").unlink()  # a run from before the marker: nothing in it is provably a run's
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"\(\.final\.0123456789ab\.partial/, checkpoint-2/, checkpoint-4/, "
                                          r"data_report\.json, final/ and \d more\)"):
        run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "2", "--overwrite_output_dir", "true"))
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("output_dir", [".", "", "..", "./"])
def test_the_current_directory_is_never_an_output_dir(tmp_path, output_dir):
    """`--output_dir .` used to delete the working directory's runs/ (`''` then crashed with a traceback)."""
    work = tmp_path / "work"
    (work / "runs" / "my_old_experiment").mkdir(parents=True)
    (work / "runs" / "my_old_experiment" / "results.txt").write_text("accuracy 71.3\n")
    (work / "data").symlink_to(REPO / "data")  # the config's data/sample paths, relative to the working directory
    before = snapshot(work / "runs"), sorted(os.listdir(work)), sorted(os.listdir(tmp_path))
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "tests" / "configs" / "bundled_sample.yaml"),
         "--output_dir", output_dir, "--max_steps", "1", "--report_to", "none"],
        cwd=work, env=ENV, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr[result.stderr.index("error: "):]
    expected = "output_dir is empty" if output_dir == "" else f"output_dir {output_dir} is "
    assert expected in message and "--output_dir runs/my_run" in message, message
    assert (snapshot(work / "runs"), sorted(os.listdir(work)), sorted(os.listdir(tmp_path))) == before


def test_a_finished_run_without_checkpoints_says_what_to_do_on_resume(tmp_path, four_step_run):
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    with pytest.raises(Exception, match="holds no checkpoint-N to continue from, only final.*--overwrite_output_dir"):
        run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "4", "--resume"))


# --------------------------------------------------------------------------------- self-contained final/


def test_final_copied_alone_still_loads_and_a_missing_base_model_says_how_to_provide_it(four_step_run, tmp_path):
    copy = tmp_path / "elsewhere" / "final"
    shutil.copytree(four_step_run / "run" / "final", copy)
    model, _, _ = ckpt.load_checkpoint(copy)  # the tiny base model travels inside the checkpoint
    shutil.move(copy / ckpt.BASE_MODEL_DIR, tmp_path / "base")
    with pytest.raises(CheckpointError, match=r"base model is missing: .*--base-model DIR"):
        ckpt.load_checkpoint(copy)
    again, _, _ = ckpt.load_checkpoint(copy, base_model=tmp_path / "base")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_local_base_model_is_named_by_an_absolute_path_that_is_checked(tmp_path):
    directory = tmp_path / "final"
    directory.mkdir()
    manifest = ckpt.CheckpointManifest(model_type="instructblip",
                                       config={"model_name_or_path": "models/local", "tiny_model": None},
                                       base_model=str(tmp_path / "models" / "local"), base_model_is_local=True)
    with pytest.raises(CheckpointError, match=f"base model is missing: {tmp_path / 'models' / 'local'}"):
        ckpt.model_arguments(manifest, directory)
    (tmp_path / "models" / "local").mkdir(parents=True)
    (tmp_path / "models" / "local" / "config.json").write_text("{}")
    assert ckpt.model_arguments(manifest, directory).model_name_or_path == str(tmp_path / "models" / "local")


# ------------------------------------------------------------------------------ --resume never deletes a run


def test_resume_on_a_finished_run_never_deletes_it_even_with_overwrite(tmp_path, four_step_run):
    """quickstart.yaml sets overwrite_output_dir: true; `--resume` on its finished run (final/ only) used to
    delete it and train from scratch. It refuses, says why, and leaves every file as it was."""
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert RUN[-2:] == ["--overwrite_output_dir", "false"]
    overwriting = RUN[:-2]  # the config's own setting: true
    result = subprocess.run(
        [sys.executable, "train.py", *overwriting, "--output_dir", str(run_dir), "--max_steps", "4", "--resume",
         "--prepared_cache_dir", str(four_step_run / "cache")],
        cwd=REPO, env=ENV, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("error: "):]
    assert "holds no checkpoint-N to continue from, only final (trained to step 4)" in message, message
    assert "never deletes a run" in message and "another --output_dir" in message, message
    after = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert after == before, "--resume changed the finished run"


# ------------------------------------------------------------------------------ two runs, one output_dir


def test_a_second_run_into_a_live_runs_directory_refuses_and_leaves_the_first_untouched(tmp_path):
    """A job started twice (a relaunch while the first still trains): the second must neither delete the first's
    files (--overwrite_output_dir) nor interleave its checkpoints and log rows; it names the first's process."""
    out = tmp_path / "twice"
    steps = ("--max_steps", "8")
    first = subprocess.Popen(train_command("hold@6", out, *steps), cwd=REPO, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = out / "run"
    while not (run_dir / "PAUSED").exists():
        if first.poll() is not None:
            pytest.fail(f"the first run ended (exit {first.returncode}) early: {first.stderr.read()[-3000:]}")
        time.sleep(0.05)
    before = snapshot(run_dir / "checkpoint-4")
    for extra in (("--overwrite_output_dir", "true"), ("--resume",)):
        second = subprocess.run([sys.executable, "train.py", *RUN, "--output_dir", str(run_dir),
                                 "--prepared_cache_dir", str(out / "cache"), *steps, *extra],
                                cwd=REPO, env=ENV, capture_output=True, text=True)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"in use by another training run (process {first.pid}" in second.stderr, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
    assert snapshot(run_dir / "checkpoint-4") == before, "the refused run touched the first run's checkpoint"
    (out / "CONTINUE").write_text("go\n")
    first.wait(timeout=600)
    assert first.returncode == 0, first.stderr.read()[-3000:]
    first.stderr.close()
    steps_logged = [row["step"] for row in log_rows(run_dir) if "loss" in row]
    assert steps_logged == [3, 6], steps_logged
    assert ckpt.read_manifest(run_dir / "final").global_step == 8
    assert not (run_dir / ".sit_vqa_run.lock").exists(), "the lock outlived the run"


# ------------------------------------------------------------------------------- leftovers of killed runs


def test_a_kill_during_the_final_save_leaves_nothing_once_resumed(tmp_path):
    out = tmp_path / "killed"
    steps = ("--max_steps", "4")
    run_until_killed("final@4", out, *steps)  # checkpoint-4 written, final/ complete under its temporary name
    run_dir = out / "run"
    assert list(run_dir.glob(".final.*.partial")), "the kill left no partial final/ (the test is not testing)"
    run_to_the_end(out, *steps, "--resume")
    assert ckpt.read_manifest(run_dir / "final").global_step == 4
    assert not list(run_dir.glob(".*.partial")), "the killed save's partial final/ was left"
    assert not (run_dir / ".checkpoint-staging").exists(), "the staging area (base_model/) outlived the run"


def test_a_fresh_run_leaves_no_staging_area(tmp_path, four_step_run):
    assert ckpt.read_manifest(four_step_run / "run" / "final").global_step == 4
    assert not (four_step_run / "run" / ".checkpoint-staging").exists()
    assert (four_step_run / "run" / "checkpoint-4" / ckpt.BASE_MODEL_DIR).is_dir()  # each checkpoint has its copy


# --------------------------------------------------------------------- a permission failure says what it is


def read_only(directory: Path):
    """Make `directory` unwritable for the training process: a read-only bind mount as root, else chmod."""
    if os.geteuid() != 0:
        for path in [directory, *directory.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        return "permission denied", lambda: [p.chmod(0o755) for p in [directory, *directory.rglob("*")] if p.is_dir()]
    if not can_mount():
        pytest.skip("a read-only directory needs a non-root user or a read-only mount")
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
    return "the filesystem is read-only", lambda: subprocess.run(["umount", str(directory)], check=True)


def test_a_resume_that_cannot_write_says_permission_not_disk_space(tmp_path, four_step_run):
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoint-4")
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")
    cause, undo = read_only(run_dir)
    try:
        result = train_process(tmp_path, "--resume")
    finally:
        undo()
    assert_write_error(result, f"cannot write {run_dir}", cause, f"the last intact checkpoint is {run_dir / 'checkpoint-2'}",
                       "make", "writable", "--resume")
    assert "once the disk has room" not in result.stderr


def test_a_disk_made_read_only_mid_run_says_so_without_a_writer_thread_traceback(tmp_path):
    """The output directory turns read-only after checkpoint-2 (a bind mount remounted read-only while the run
    holds): the message names the cause and how to continue, TensorBoard's writer thread prints no traceback."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    remount = os.geteuid() == 0  # root writes through any file mode: a bind mount, remounted read-only
    if remount and not can_mount():
        pytest.skip("a read-only directory needs a non-root user or a read-only mount")
    cause = "the filesystem is read-only" if remount else "permission denied"
    if remount:
        subprocess.run(["mount", "--bind", str(run_dir), str(run_dir)], check=True)
    command = train_command("hold@3", tmp_path, "--max_steps", "8", "--logging_steps", "1", "--save_steps", "2",
                            "--report_to", "tensorboard")
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        while not (run_dir / "PAUSED").exists():
            if process.poll() is not None:
                pytest.fail(f"the run ended before step 3: {process.stderr.read()[-3000:]}")
            time.sleep(0.05)
        if remount:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(run_dir)], check=True)
        else:
            for path in [run_dir, *run_dir.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)
        (tmp_path / "CONTINUE").write_text("")
        stderr = process.communicate()[1]
    finally:
        if process.poll() is None:
            process.kill()
        if remount:
            subprocess.run(["umount", str(run_dir)], check=True)
        for path in [run_dir, *run_dir.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    assert process.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr and "Exception in thread" not in stderr, stderr[-3000:]
    message = stderr[stderr.index("error: "):]
    for words in (cause, f"the last intact checkpoint is {run_dir / 'checkpoint-2'}", "make", "writable", "--resume"):
        assert words in message, (words, message)
    assert "once the disk has room" not in message and "Free space" not in message


def test_a_resume_whose_weights_do_not_fit_names_a_fix_train_py_takes(tmp_path, four_step_run):
    """train.py takes no --allow-partial-load: the refusal names what it does take."""
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoint-4")
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")
    result = train_process(tmp_path, "--resume", "--train_all", "true")
    assert_write_error(result, "run_config.json")  # exit 2, no traceback, the message from "error: " on
    assert "--allow-partial-load" not in result.stderr


def test_resume_refuses_a_changed_learning_rate_naming_the_recorded_one(tmp_path, four_step_run):
    """The optimizer and scheduler state come from the checkpoint: --learning_rate 0.5 would be recorded in
    run_config.json without being what trains."""
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoint-4")
    shutil.copytree(four_step_run / "cache", tmp_path / "cache")
    recorded = json.loads((run_dir / "run_config.json").read_text())
    before = (run_dir / "run_config.json").read_text()
    result = train_process(tmp_path, "--resume", "--learning_rate", "0.5", "--warmup_steps", "3")
    assert_write_error(result, f"learning_rate 0.5 now, {recorded['learning_rate']!r} in {run_dir / 'run_config.json'}",
                       f"warmup_steps 3.0 now, {recorded['warmup_steps']!r}", "--learning_rate, --warmup_steps")
    assert (run_dir / "run_config.json").read_text() == before
    assert not (run_dir / "checkpoint-4").exists()


def test_resume_keeps_checkpoints_moved_aside_as_damaged(tmp_path, four_step_run):
    """What is left of a run whose intact checkpoints are gone (damaged_checkpoints/) is not deleted either."""
    run_dir = tmp_path / "run"
    shutil.copytree(four_step_run / "run", run_dir)
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoint-2")
    (run_dir / "damaged_checkpoints").mkdir()
    os.rename(run_dir / "checkpoint-4", run_dir / "damaged_checkpoints" / "checkpoint-4")
    with pytest.raises(ConfigError, match="holds no checkpoint-N to continue from, only damaged_checkpoints"):
        run_training(quick_config(run_dir, four_step_run / "cache", "--max_steps", "4", "--resume",
                                  "--overwrite_output_dir", "true"))
    assert (run_dir / "damaged_checkpoints" / "checkpoint-4" / ckpt.WEIGHTS_NAME).is_file()
