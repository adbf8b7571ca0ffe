"""Generation over a list of records, split across processes and kept on disk as it is made.

    torchrun --nproc_per_node 8 evaluate.py --config vqa_sit.yaml --checkpoint runs/vqa_sit --out runs/eval/sit
    accelerate launch --num_processes 8 evaluate.py --config vqa_sit.yaml --checkpoint runs/vqa_sit --out ...

Works on any records (VQAv2, GQA, text sets): the caller passes one key per record (e.g. its question id), a
batch size and a `generate(batches)` function that yields the texts of each batch of record indices in turn.

Sharding rule (`plan_batches`): the records are cut into the batches one process would make (consecutive
records, `batch_size` each, the last one shorter) and the batches still to do are dealt out in turn: rank r
takes the r-th, (r + world)-th, ... of them. Every batch is exactly a batch of the one-process run -- the same
records, so the same padding -- which makes the outputs, and the scores, those of one process whatever the
number of processes (nothing rests on generation being independent of padding).

On disk (`generate_to_disk`), under OUT/partial/:
- fingerprint.json: everything that decides the outputs (the caller's settings, the records' keys in order,
  the batch size). A partial run is continued only with the same fingerprint; otherwise the run stops with
  an error naming what changed (`restart=True`, evaluate.py --restart, discards the partial files). The
  number of processes is not part of it: a run cut off on 8 GPUs can be finished on 4, or on one.
- rank-R.jsonl: one JSON line per record, {"index": position in the records, "key": its key, "text": the
  output}, appended a whole batch at a time and flushed to disk (fsync) before the next batch starts. A kill
  can leave at most a torn last line, which is ignored (and cut off before that rank appends again); a batch
  counts as done only when every one of its records has a line.
Once every rank has finished (a barrier), the main rank reads all the files and returns the texts in record
order; the caller writes its reports and then calls `remove_partial` -- in that order, so a crash between
the two keeps the predictions.

In memory (`generate_gathered`, for the evaluation during training): the same sharding, the texts gathered
on every rank with `all_gather_object`.

Under a launcher (torchrun, accelerate launch: WORLD_SIZE > 1) `join_launch` joins the process group through
accelerate's `PartialState` (gloo on CPU, NCCL on GPUs, each rank on its own GPU). The files live under the
output directory, so on several nodes it must be on a filesystem every node sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState  # the launcher glue the Trainer itself uses

from sit_vqa.errors import EvaluationError, SitVqaError
from sit_vqa.files import held_lock, remove, write_error, write_json_atomically
from sit_vqa.modeling.generation import batches_of

PARTIAL_DIR = "partial"
LOCK_NAME = "evaluation.lock"  # held (flock) by the main rank while an evaluation writes into OUT
FINGERPRINT_NAME = "fingerprint.json"
PARTIAL_FORMAT = "sit-vqa-partial/1"
RESTART_HINT = "pass --restart to discard it and start over, or choose another --out"

Batches = list[list[int]]
Generate = Callable[[Batches], Iterable[Sequence[str]]]  # batches of record indices -> each batch's texts


# ----------------------------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run (one process, unless torch.distributed is set up)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_gather(self, value) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def join_launch(device: str | None) -> tuple[Ranks, str]:
    """(ranks, this process's device). Under torchrun / accelerate launch, joins the process group; a
    requested "cuda" becomes this rank's GPU (cuda:LOCAL_RANK), "cpu" keeps every rank on the CPU (gloo)."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not launched and not dist.is_initialized():
        return Ranks(), device or ("cuda" if torch.cuda.is_available() else "cpu")
    state = PartialState(cpu=device == "cpu")
    if device in (None, "cuda"):  # this rank's GPU; plain "cpu" on a machine without one (as for one process)
        device = "cpu" if state.device.type == "cpu" else str(state.device)
    return Ranks(state.process_index, state.num_processes), device


# -------------------------------------------------------------------------------------------- sharding


def plan_batches(count: int, batch_size: int, ranks: Ranks, done: Iterable[int] = ()) -> Batches:
    """This rank's batches: the one-process batches not yet done, dealt out in turn."""
    done = set(done)
    remaining = [batch for batch in batches_of(count, batch_size) if not done.issuperset(batch)]
    return remaining[ranks.rank::ranks.world_size]


def _indexed(batches: Batches, generate: Generate) -> Iterator[tuple[list[int], Sequence[str]]]:
    # strict: zip then also exhausts `generate`, so its clean-up (the model's train mode back) runs now
    for batch, texts in zip(batches, generate(batches), strict=True):
        if len(texts) != len(batch):
            raise EvaluationError(f"generate returned {len(texts)} texts for a batch of {len(batch)} records")
        yield batch, texts


def generate_gathered(count: int, batch_size: int, generate: Generate, ranks: Ranks | None = None) -> list[str]:
    """Every rank generates its share of `count` records; every rank gets all the texts, in record order."""
    ranks = ranks or Ranks.current()
    mine = [(index, text) for batch, texts in _indexed(plan_batches(count, batch_size, ranks), generate)
            for index, text in zip(batch, texts)]
    texts: list[str | None] = [None] * count
    for shard in ranks.all_gather(mine):
        for index, text in shard:
            texts[index] = text
    missing = [index for index, text in enumerate(texts) if text is None]
    if missing:
        raise EvaluationError(f"{len(missing)} of {count} records got no output from any rank (e.g. {missing[:3]})")
    return texts


# ------------------------------------------------------------------------------------------- on disk


@contextlib.contextmanager
def exclusive(out_dir: str | Path, ranks: Ranks) -> Iterator[None]:
    """Hold OUT/evaluation.lock (`files.held_lock`) for the whole evaluation: a second evaluation into the same OUT
    refuses, naming the holder's pid, instead of generating everything again beside the first and reporting
    "continued an interrupted run". The main rank locks; every rank stops with its error (none is left waiting
    at a barrier)."""
    path = Path(out_dir) / LOCK_NAME

    def busy(holder: str) -> EvaluationError:
        return EvaluationError(
            f"{path.parent} is being written by another evaluation ({holder}, holding {path}); wait for it to "
            "finish (its report then says what it scored), or pass another --out"
        )

    with contextlib.ExitStack() as stack:
        problem = None
        if ranks.is_main:
            try:
                stack.enter_context(held_lock(path, busy))
            except SitVqaError as error:
                problem = error
        refused = ranks.all_gather(str(problem) if problem else None)[0]
        if problem is not None:
            raise problem
        if refused is not None:
            raise EvaluationError(refused)
        yield


@dataclass
class Generated:
    texts: list[str] | None  # in record order on the main rank; None on the others
    reused: int  # records whose batch an interrupted earlier run had finished (not generated again)


def generate_to_disk(
    keys: Sequence, batch_size: int, generate: Generate, out_dir: str | Path, fingerprint: Mapping, *,
    restart: bool = False, ranks: Ranks | None = None,
) -> Generated:
    """Generate every record's text, continuing what an interrupted run with the same fingerprint left in
    OUT/partial/. Every rank calls it; `keys` (JSON values, one per record) must be the same on all."""
    ranks = ranks or Ranks.current()
    partial = Path(out_dir) / PARTIAL_DIR
    keys = list(keys)
    full_fingerprint = {"format": PARTIAL_FORMAT, **fingerprint, "batch_size": batch_size,
                        "num_records": len(keys), "keys_sha256": _keys_hash(keys)}
    _claim(partial, full_fingerprint, restart, ranks)
    done = read_partial(partial, keys)
    ranks.barrier()  # no rank appends before every rank has read the same files (and planned the same way)
    path = partial / f"rank-{ranks.rank}.jsonl"
    with _open_for_append(path) as handle:
        for batch, texts in _indexed(plan_batches(len(keys), batch_size, ranks, done), generate):
            _append(handle, path, [{"index": i, "key": keys[i], "text": t} for i, t in zip(batch, texts)])
    ranks.barrier()  # every rank's lines are on disk
    reused = sum(len(batch) for batch in batches_of(len(keys), batch_size) if done.keys() >= set(batch))
    if not ranks.is_main:
        return Generated(None, reused)
    written = read_partial(partial, keys)
    missing = [index for index in range(len(keys)) if index not in written]
    if missing:
        raise EvaluationError(f"{partial}: no output for {len(missing)} of {len(keys)} records after every rank "
                              f"finished (e.g. record {missing[0]}, key {keys[missing[0]]}); {RESTART_HINT}")
    return Generated([written[index] for index in range(len(keys))], reused)


def remove_partial(out_dir: str | Path) -> None:
    """Delete OUT/partial/ (call it once the reports made from it are written)."""
    remove(Path(out_dir) / PARTIAL_DIR)


def _keys_hash(keys: Sequence) -> str:
    return hashlib.sha256(json.dumps(keys, ensure_ascii=False).encode()).hexdigest()


def _claim(partial: Path, fingerprint: dict, restart: bool, ranks: Ranks) -> None:
    """Make OUT/partial/ this run's: refuse one left by other settings, or discard it with `restart`.
    Every rank checks (so all of them stop with the same error, none left waiting); only the main rank writes."""
    if not restart:
        _check_fingerprint(partial, fingerprint)
    if ranks.is_main:
        if restart:
            remove(partial)
        if not (partial / FINGERPRINT_NAME).is_file():
            write_json_atomically(partial / FINGERPRINT_NAME, fingerprint)
    ranks.barrier()


def _check_fingerprint(partial: Path, fingerprint: dict) -> None:
    path = partial / FINGERPRINT_NAME
    if not path.is_file():
        if any(partial.glob("rank-*.jsonl")):
            raise EvaluationError(f"{partial} holds partial predictions but no {FINGERPRINT_NAME}, so the settings "
                                  f"that made them are unknown; {RESTART_HINT}")
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvaluationError(f"{path} is unreadable ({error}); {RESTART_HINT}") from None
    changed = sorted(key for key in stored.keys() | fingerprint.keys() if stored.get(key) != fingerprint.get(key))
    if changed:
        shown = "; ".join(f"{key}: {short(stored.get(key))} then, {short(fingerprint.get(key))} now"
                          for key in changed)
        raise EvaluationError(
            f"{partial} holds the predictions of an interrupted run made with other settings ({shown}). "
            f"Rerun with that run's settings to continue it; {RESTART_HINT}"
        )


def short(value) -> str:
    """`value` as JSON, cut to 80 characters (for messages)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def read_partial(partial: Path, keys: Sequence) -> dict[int, str]:
    """{record index: text} from every rank-*.jsonl under `partial` (of this run or of one with another
    number of processes). A torn last line is skipped; any other bad line is an error."""
    done: dict[int, str] = {}
    for path in sorted(partial.glob("rank-*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        # the last piece is b"" after a complete file, or the line a kill cut short: not a record
        for number, line in enumerate(lines[:-1], 1):
            index, text = _parse_line(path, number, line, keys)
            done[index] = text  # a batch cut short and done again repeats its lines, with the same texts
    return done


def _parse_line(path: Path, number: int, line: bytes, keys: Sequence) -> tuple[int, str]:
    try:
        record = json.loads(line)
        index, key, text = record["index"], record["key"], record["text"]
    except (ValueError, KeyError, TypeError):
        raise EvaluationError(f"{path}, line {number}: not a partial-prediction line ({line[:60]!r}); "
                              f"{RESTART_HINT}") from None
    if not isinstance(index, int) or not 0 <= index < len(keys) or keys[index] != key or not isinstance(text, str):
        raise EvaluationError(f"{path}, line {number}: record {index} with key {key!r} is not one of this run's "
                              f"records; {RESTART_HINT}")
    return index, text


def _open_for_append(path: Path):
    """This rank's file, opened for appending after cutting off a torn last line an earlier kill left."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            data = path.read_bytes()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):
                os.truncate(path, complete)
        return path.open("a", encoding="utf-8")
    except OSError as error:
        raise write_error(path, error) from error


def _append(handle, path: Path, records: list[dict]) -> None:
    # one write per batch, on disk before the next batch starts: a kill loses at most the batch in progress
    try:
        handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as error:
        raise write_error(path, error) from error
