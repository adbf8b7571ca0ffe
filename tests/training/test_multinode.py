"""A 2-node run that survives a node's death: two torchrun agents on this machine (`--nnodes 2 --nproc_per_node 1
--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT`, gloo), as on two machines sharing the run's filesystem.
One node's training process is killed with SIGKILL, the run ends on both nodes, and `--resume` on both continues
it to the weights and log of an uninterrupted 2-node run; each checkpoint is written once, by global rank 0.
The README's multi-node command and docs/slurm_train.sbatch launch with these flags."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sit_vqa.modeling import checkpoint as ckpt

from tests.training.test_faults import ENV, FAULT_RUN, REPO, RUN, final_weights, log_rows

STEPS = ("--max_steps", "12", "--per_device_train_batch_size", "2", "--ddp_backend", "gloo")
NODE_EXIT_LIMIT_S = 120  # a surviving node left waiting for its peer would hang the test: fail it instead


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_nodes(moment: str, out: Path, *extra: str) -> list[subprocess.Popen]:
    """The two nodes' torchrun agents, each starting one training process (train.py itself for `moment` None,
    else fault_run.py stopping at `moment`); their global ranks are the rendezvous's to give."""
    port = free_port()
    script = ["train.py"] if moment is None else [str(FAULT_RUN), moment]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               *script, *RUN, *STEPS, "--output_dir", str(out / "run"),
               "--prepared_cache_dir", str(out / "cache"), *extra]
    return [subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True) for _ in range(2)]


def wait_for_nodes(nodes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Each node's (exit code, stderr); a node still running after NODE_EXIT_LIMIT_S fails the test."""
    outcomes = []
    try:
        for node in nodes:
            _, stderr = node.communicate(timeout=NODE_EXIT_LIMIT_S)
            outcomes.append((node.returncode, stderr))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a node still ran {NODE_EXIT_LIMIT_S} s after its peer ended")
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.communicate()
    return outcomes


def run_nodes_to_the_end(moment: str | None, out: Path, *extra: str) -> None:
    for code, stderr in wait_for_nodes(start_nodes(moment, out, *extra)):
        assert code == 0, stderr[-3000:]


def run_nodes_until_killed(moment: str, out: Path, *extra: str) -> list[tuple[int, str]]:
    """Start both nodes; when the process `moment` names stops there, SIGKILL it; return how each node ended."""
    paused = out / "run" / "PAUSED"
    paused.unlink(missing_ok=True)
    nodes = start_nodes(moment, out, *extra)
    while not paused.is_file() or not paused.read_text().endswith("\n"):
        if any(node.poll() is not None for node in nodes):
            outcomes = wait_for_nodes(nodes)
            pytest.fail(f"a node ended before {moment}: {[(code, err[-2000:]) for code, err in outcomes]}")
        time.sleep(0.05)
    os.kill(int(paused.read_text()), signal.SIGKILL)
    outcomes = wait_for_nodes(nodes)
    paused.unlink()
    return outcomes


def published(out: Path) -> list[tuple[int, str]]:
    """(global rank, name) of every atomic write into the run directory, in order (fault_run.py records them)."""
    rows = [json.loads(line) for line in (out / "published.jsonl").read_text().splitlines()]
    return [(row["rank"], Path(row["path"]).name) for row in rows if Path(row["path"]).parent == out / "run"]


@pytest.mark.slow
def test_a_node_killed_mid_run_resumes_to_the_uninterrupted_two_node_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "killed"
    run_nodes_to_the_end(None, whole)  # as the README's multi-node command runs it

    # rank 1 dies between saves; rank 0 finds its peer gone at the next gradient all-reduce
    ended = run_nodes_until_killed("logged@6:rank1", cut)
    assert [code != 0 for code, _ in ended] == [True, True], "both nodes' torchrun report the failure"
    # the survivor says why it stopped and how to go on, in a paragraph (the collective's traceback is not shown)
    start = "error: process 0 of 2"  # on a line a progress bar may have begun (no newline after its \r)
    said = [line[line.index(start):] for _, stderr in ended for line in stderr.splitlines() if start in line]
    assert len(said) == 1, [stderr[-3000:] for _, stderr in ended]
    assert "a collective operation with the run's other processes failed" in said[0], said
    assert "the last intact checkpoint is" in said[0] and "checkpoint-4;" in said[0] and "--resume" in said[0], said
    assert not [stderr for _, stderr in ended if 'sit_vqa/training/run.py", line' in stderr], "no traceback"
    assert ckpt.latest_checkpoint(cut / "run").name == "checkpoint-4"
    # resumed, rank 0 (the writer) dies with checkpoint-8 complete in staging, before renaming it into place
    run_nodes_until_killed("publish@8:rank0", cut, "--resume")
    assert ckpt.latest_checkpoint(cut / "run").name == "checkpoint-4"
    assert (cut / "run" / ".checkpoint-staging" / "checkpoint-8").is_dir(), "the kill left a partial checkpoint"
    run_nodes_to_the_end("none", cut, "--resume")

    run = cut / "run"
    assert log_rows(run) == log_rows(whole / "run")  # each step's loss once, train_loss: bit for bit
    assert [row["step"] for row in log_rows(run) if "loss" in row] == [3, 6, 9, 12]
    expected, resumed = final_weights(whole / "run"), final_weights(run)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    # written once, by global rank 0: every checkpoint, final/ and every file of the run directory
    writes = published(cut)
    assert {rank for rank, _ in writes} == {0}, writes
    checkpoints = [name for _, name in writes if name.startswith("checkpoint-") or name == "final"]
    assert checkpoints == ["checkpoint-4", "checkpoint-8", "checkpoint-12", "final"], writes
    assert sorted(path.name for path in run.iterdir()) == sorted(path.name for path in (whole / "run").iterdir())
    assert not [path.name for path in run.iterdir() if path.name.startswith(".") and path.name != ".sit_vqa_run.json"]
