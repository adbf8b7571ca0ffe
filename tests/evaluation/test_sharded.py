"""sit_vqa.evaluation.sharded: the sharding rule, the partial files and their fingerprint, on plain generate functions
(the model's runs are in test_evaluate_scale.py); the gather across two real gloo processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sit_vqa.evaluation import sharded
from sit_vqa.errors import EvaluationError
from sit_vqa.evaluation.sharded import (
    Ranks,
    batches_of,
    generate_to_disk,
    plan_batches,
    read_partial,
)

REPO = Path(__file__).resolve().parents[2]
KEYS = [1000 + 7 * i for i in range(23)]  # 23 records, batch 4: five full batches and one of 3
FINGERPRINT = {"checkpoint": "runs/x/final", "max_new_tokens": 8}


def text_of(key) -> str:
    return f"output for {key}"


class Recorder:
    """A generate function (the contract sharded runs): the texts of each batch; it notes the batches asked
    for, and raises KeyboardInterrupt (a crash) once `crash_after` batches are out."""

    def __init__(self, crash_after: int | None = None):
        self.crash_after = crash_after
        self.batches = []

    def __call__(self, batches):
        for batch in batches:
            if self.crash_after is not None and len(self.batches) == self.crash_after:
                raise KeyboardInterrupt("simulated crash")
            self.batches.append(batch)
            yield [text_of(KEYS[i]) for i in batch]


def test_batches_are_those_of_one_process_dealt_out_in_turn():
    assert batches_of(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    one_process = batches_of(23, 4)
    for world in (1, 2, 3, 8):
        shards = [plan_batches(23, 4, Ranks(rank, world)) for rank in range(world)]
        dealt = [batch for shard in shards for batch in shard]
        assert sorted(dealt) == one_process  # every batch once, each exactly a one-process batch
        assert shards[0][0] == one_process[0] and (world == 1 or shards[1][0] == one_process[1])
    # what an earlier run finished is left out, a batch with only some of its records done is done again
    done = {0, 1, 2, 3, 8, 9, 10, 11, 12}
    shards = [plan_batches(23, 4, Ranks(rank, 2), done) for rank in range(2)]
    assert shards == [[[4, 5, 6, 7], [16, 17, 18, 19]], [[12, 13, 14, 15], [20, 21, 22]]]


def test_a_crashed_run_is_continued_with_only_the_missing_batches(tmp_path):
    expected = [text_of(key) for key in KEYS]
    crashing = Recorder(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_to_disk(KEYS, 4, crashing, tmp_path, FINGERPRINT)
    partial = tmp_path / sharded.PARTIAL_DIR
    lines = (partial / "rank-0.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines[:2]] == [
        {"index": 0, "key": KEYS[0], "text": expected[0]}, {"index": 1, "key": KEYS[1], "text": expected[1]}]
    assert len(lines) == 8  # two whole batches
    with (partial / "rank-0.jsonl").open("a") as handle:  # what a kill in the middle of a write leaves
        handle.write('{"index": 8, "key": 1056, "te')

    resumed = Recorder()
    generated = generate_to_disk(KEYS, 4, resumed, tmp_path, FINGERPRINT)
    assert generated.texts == expected
    assert generated.reused == 8
    assert resumed.batches == batches_of(23, 4)[2:]
    assert len(read_partial(partial, KEYS)) == 23  # the torn line was cut off, not left inside the file
    assert (partial / "rank-0.jsonl").read_text().count("\n") == 23
    sharded.remove_partial(tmp_path)
    assert not partial.exists()


def test_a_partial_run_of_other_settings_is_refused_or_restarted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        generate_to_disk(KEYS, 4, Recorder(crash_after=1), tmp_path, FINGERPRINT)
    partial = tmp_path / sharded.PARTIAL_DIR
    with pytest.raises(EvaluationError, match=r"partial holds .*other settings \(max_new_tokens: 8 then, 9 now\)"
                                              r".*--restart"):
        generate_to_disk(KEYS, 4, Recorder(), tmp_path, {**FINGERPRINT, "max_new_tokens": 9})
    with pytest.raises(EvaluationError, match=r"batch_size: 4 then, 5 now"):
        generate_to_disk(KEYS, 5, Recorder(), tmp_path, FINGERPRINT)
    with pytest.raises(EvaluationError, match=r"keys_sha256"):  # other questions
        generate_to_disk(KEYS[:-1], 4, Recorder(), tmp_path, FINGERPRINT)

    fresh = Recorder()
    generated = generate_to_disk(KEYS, 5, fresh, tmp_path, FINGERPRINT, restart=True)
    assert generated.reused == 0 and fresh.batches == batches_of(23, 5)
    assert json.loads((partial / sharded.FINGERPRINT_NAME).read_text())["batch_size"] == 5


def test_a_damaged_partial_file_is_an_error_naming_the_line(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        generate_to_disk(KEYS, 4, Recorder(crash_after=1), tmp_path, FINGERPRINT)
    path = tmp_path / sharded.PARTIAL_DIR / "rank-0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(EvaluationError, match=r"rank-0.jsonl, line 2: not a partial-prediction line.*--restart"):
        generate_to_disk(KEYS, 4, Recorder(), tmp_path, FINGERPRINT)
    path.write_text(json.dumps({"index": 3, "key": 5, "text": "x"}) + "\n")
    with pytest.raises(EvaluationError, match=r"line 1: record 3 with key 5 is not one of this run's records"):
        generate_to_disk(KEYS, 4, Recorder(), tmp_path, FINGERPRINT)


GATHER_PROBE = """
import json, os, sys
import torch.distributed as dist
from sit_vqa.evaluation.sharded import Ranks, generate_gathered
dist.init_process_group("gloo")
ranks = Ranks.current()
asked = []
def generate(batches):
    for batch in batches:
        asked.append(batch)
        yield [f"text {i} by any rank" for i in batch]
texts = generate_gathered(11, 3, generate, ranks)
with open(os.path.join(sys.argv[1], f"rank-{ranks.rank}.json"), "w") as handle:
    json.dump({"asked": asked, "texts": texts}, handle)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_every_rank_generates_its_share_and_gets_all_texts(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(GATHER_PROBE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(2)]
    assert results[0]["asked"] == [[0, 1, 2], [6, 7, 8]] and results[1]["asked"] == [[3, 4, 5], [9, 10]]
    expected = [f"text {i} by any rank" for i in range(11)]
    assert results[0]["texts"] == results[1]["texts"] == expected
