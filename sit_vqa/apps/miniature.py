"""The miniature experiment: baseline vs multitask vs SIT, a tiny InstructBLIP, procedural scenes, a CPU.

    python -m sit_vqa.apps.miniature --out runs/miniature                 # 2 worlds x 3 arms x 3 seeds (+ pool row)
    python -m sit_vqa.apps.miniature --out runs/miniature-quick --quick   # the named world, 3 arms, 1 seed
    python -m sit_vqa.apps.miniature --out runs/size --quick --set learning_rate=2e-3      # a sizing run

Measured figures, the machine and the times: docs/MINIATURE.md.

1. Generates, per world, a procedural train/val set in the official VQAv2 + COCO formats
   (`sit_vqa.samples.scenes`) into OUT/data-<world>. Two worlds, because what the captions say decides what
   describing first can carry to the answer: "named" (every caption names every shape) and "simple"
   (COCO-like: more colours, kinds and backgrounds, varied captions, some naming no shape).
2. Trains one tiny InstructBLIP (every weight trains, as in the quickstart) per world, arm and seed with the
   same steps, batch and schedule, through train.py's own `run_training`: `baseline` (question -> answer),
   `multitask` (the baseline records plus separate "Describe the image." records: the same caption
   supervision, not in sequence) and `sit` (question -> "Description: <caption>\nAnswer: <answer>"); in the
   named world of the full run also `sit_pool` (SIT on the instruction pool's phrasings: the pool row). The
   same seeds in every arm (model init and data order), so the arms are paired. Runs go two at a time, one
   thread each, in separate processes, seed by seed; each run's result is written to OUT/results/ when it
   ends, and a rerun skips the runs finished with the same settings (an interrupted experiment loses only
   the runs in flight). Progress lines (which run, step, elapsed) go to stderr.
3. Scores each on the val split through evaluate.py's own `run_evaluation` (official VQAv2 accuracy, the SIT
   prompt for the SIT arms; `sit` and `sit_pool` also with the pool's held-out phrasings). The other arms are
   also asked to describe each val image. Per arm and question type: the share of questions whose answer can
   be read from the model's own description (`sit_vqa.samples.reading`) and whether the answer given is the
   one it implies; for SIT also the description's token F1 / exact match against the five reference captions.
4. The paired differences SIT - baseline and SIT - multitask per answer type and per question type, with a
   95% bootstrap interval that resamples seeds and questions (`sit_vqa.metrics.paired`), and a verdict per
   row: "SIT better", "SIT worse" or "not separated" (the interval holds 0); with one seed, no verdict.
5. Image-blind references on the same val questions: the majority answer, each question type's most frequent
   train answer, and the question prior (each question text's most frequent train answer). A run below the
   best of them + 3 has not learned to look: the table flags it, and `--strict` exits 1.

Writes OUT/results.json (every figure of every run, the settings, the wall times) and OUT/table.md, and prints
the table. OUT/runs/<world>-<arm>-seed<N>/ hold the checkpoints, OUT/eval/ the evaluations
(predictions.jsonl, report.md, descriptions.json), OUT/logs/ each run's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sit_vqa.apps.miniature_stats import (
    DESCRIPTIONS_FILE,
    add_run_statistics,
    captions_by_image,
    description_scores,
    paired_differences,
    read_predictions,
    reference_scores,
)
from sit_vqa.apps.miniature_table import learning_failures, table_markdown

ARMS = ("baseline", "multitask", "sit")
POOL_ARM = "sit_pool"  # SIT trained on the instruction pool's phrasings: the pool row, against the sit arm
# The two worlds (sample styles of sit_vqa.samples.scenes): what the captions say decides what describing first
# can carry to the answer.
WORLDS = {
    "named": "every caption names every shape (white 64 px, 1-3 shapes of distinct kinds and colours, "
             "4 colours x 3 kinds): describing first carries the answer",
    "simple": "COCO-like: 6 colours x 5 kinds x 3 backgrounds, varied captions, one template in seven names "
              "no shape, colours repeat within an image",
}


@dataclass(frozen=True)
class Budget:
    train_images: int
    val_images: int
    max_steps: int
    worlds: tuple[str, ...]
    seeds: tuple[int, ...]
    pool_worlds: tuple[str, ...] = ()  # worlds that also run the instruction-pool row


FULL = Budget(train_images=2000, val_images=200, max_steps=1200, worlds=("named", "simple"), seeds=(0, 1, 2),
              pool_worlds=("named",))
QUICK = Budget(train_images=2000, val_images=200, max_steps=1200, worlds=("named",), seeds=(0,))  # seed 0 of FULL's named world
# What learning_failures asks of every arm beyond the best image-blind reference (overall points): a model
# that ignores the image reaches the prior and no more.
MARGIN_OVER_PRIOR = 3.0

# Every run's settings (config keys, as on train.py's command line) besides data, mode, seed and steps:
# the quickstart's model and optimiser (configs/quickstart.yaml): a 1.3 M-weight InstructBLIP (hidden 128,
# 4 heads, 2 layers, 64 px images in 8 px patches, 8 query tokens, no dropout), every weight trained; AdamW
# 1e-3, weight decay 0.01, 50 warm-up steps, cosine, batch 32, clip 1, 1,200 steps (the prototype's size:
# at hidden 64 the runs sat at the tipping point between looking and guessing, docs/MINIATURE.md), with
# PyTorch's own init for linear and convolution layers: from transformers' std-0.02 init the baseline's ViT
# hardly trains and the baseline stays near the question prior (docs/MINIATURE.md, "Sizing").
# `--set KEY=VALUE` overrides any of them, or sets any other train.py key, for every run (sizing, recipes);
# results.json records what ran.
RUN_SETTINGS = {
    "model_type": "instructblip", "tiny_model": "decoder", "tiny_hidden_size": 128, "tiny_num_layers": 2,
    "tiny_image_size": 64, "tiny_patch_size": 8, "tiny_num_query_tokens": 8, "tiny_num_heads": 4,
    "tiny_dropout": 0.0, "tiny_random_query_tokens": True, "tiny_init": "pytorch", "train_all": True,
    "caption_policy": "random", "use_cpu": True, "learning_rate": 1e-3, "weight_decay": 0.01,
    "warmup_steps": 50, "lr_scheduler_type": "cosine", "max_grad_norm": 1.0, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64, "logging_steps": 50, "save_strategy": "no", "report_to": "none",
    "disable_tqdm": True, "dataloader_num_workers": 0, "overwrite_output_dir": True, "cpu_threads": 1,
}  # fmt: skip
POOL_FILE = "configs/prompts/instruction_pool.yaml"  # the pool arm's phrasings (its held_out ones are asked)
PROGRESS_EVERY = 100  # steps between a run's progress lines


@dataclass(frozen=True)
class Job:
    world: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.world}-{self.arm}-seed{self.seed}"

    @property
    def asked_held_out(self) -> bool:
        """The arms of the pool row are also asked with the held-out phrasings."""
        return self.arm in ("sit", POOL_ARM)


# ------------------------------------------------------------------------------------------------- runs


def job_settings(budget: Budget, job: Job, extra: dict | None = None) -> dict:
    """A run's settings (config keys) besides where its files go: what makes two runs the same run. A run that
    loads a saved model (`--set model_name_or_path=DIR`) leaves out the tiny_* settings: they describe the model
    built in code (and tiny_model contradicts model_name_or_path)."""
    pool = {"instruction_pool": POOL_FILE} if job.arm == POOL_ARM else {}
    settings = {
        **RUN_SETTINGS, **(extra or {}), "mode": "sit" if job.arm == POOL_ARM else job.arm, "seed": job.seed,
        "tiny_model_seed": job.seed, "max_steps": budget.max_steps, "sample_style": job.world,
        "sample_train_images": budget.train_images, "sample_val_images": budget.val_images, **pool,
    }
    if settings.get("model_name_or_path") is not None:
        settings = {key: value for key, value in settings.items() if not key.startswith("tiny_")}
    return settings


def run_overrides(out: Path, budget: Budget, job: Job, extra: dict | None = None) -> list[str]:
    settings = {
        **job_settings(budget, job, extra), "sample_dir": str(out.absolute() / f"data-{job.world}"),
        # absolute: a relative sample_dir or prepared_cache_dir would lie under the cache root, not in OUT
        "prepared_cache_dir": str(out.absolute() / "cache"), "output_dir": str(out / "runs" / job.name),
    }
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def load_run_config(out: Path, budget: Budget, job: Job, extra: dict | None = None):
    from sit_vqa.config import load_config

    return load_config(None, run_overrides(out, budget, job, extra))


def _progress(message: str) -> None:
    """A progress line on the experiment's own stderr (the workers' stdout and stderr go to their logs)."""
    print(f"[miniature {time.strftime('%H:%M:%S')}] {message}", file=sys.__stderr__, flush=True)


def _progress_callback(job: Job):
    from transformers import TrainerCallback

    started = time.perf_counter()

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % PROGRESS_EVERY == 0:
                elapsed = (time.perf_counter() - started) / 60
                _progress(f"{job.name}: step {state.global_step}/{state.max_steps}, {elapsed:.1f} min")

    return Progress()


def train_and_evaluate(out: Path, budget: Budget, job: Job, extra: dict | None = None) -> dict:
    """One world, arm and seed, in a worker process with one thread: train, score on val, and (arms that do
    not describe in their answers) ask the model to describe each val image; the pool row's arms are also
    asked with the held-out phrasings. Logs go to OUT/logs/."""
    from sit_vqa.evaluation.options import EvalOptions
    from sit_vqa.evaluation.runner import run_evaluation
    from sit_vqa.training.run import run_training

    (out / "logs").mkdir(parents=True, exist_ok=True)
    _progress(f"{job.name}: training {budget.max_steps} steps")
    with open(out / "logs" / f"{job.name}.log", "w", encoding="utf-8", buffering=1) as log:  # line by line
        sys.stdout = sys.stderr = log
        logging.basicConfig(level=logging.WARNING, stream=log, force=True)
        config = load_run_config(out, budget, job, extra)
        started = time.perf_counter()
        final = run_training(config, callbacks=[_progress_callback(job)])
        trained = time.perf_counter()
        evaluation = run_evaluation(config, EvalOptions(checkpoint=final, out_dir=out / "eval" / job.name,
                                                        progress=False))
        if config.data.mode != "sit":
            write_image_descriptions(config, final, evaluation.out_dir)
        held_out = None
        if job.asked_held_out:
            held_out = run_evaluation(config, EvalOptions(checkpoint=final, out_dir=out / "eval" / f"{job.name}-held-out",
                                                          prompt_variant="held-out", progress=False))
        scored = time.perf_counter()
    report = evaluation.report
    return {
        **asdict(job), "name": job.name, "settings": job_settings(budget, job, extra),
        "overall": report["overall"], "perAnswerType": report["perAnswerType"],
        "answer_marker_rate": report["answer_marker_rate"], "num_questions": report["num_questions"],
        "eval_dir": str(evaluation.out_dir), "train_seconds": round(trained - started, 1),
        "eval_seconds": round(scored - trained, 1),
        "held_out": None if held_out is None else {"overall": held_out.report["overall"],
                                                   "eval_dir": str(held_out.out_dir)},
    }


def write_image_descriptions(config, checkpoint: Path, eval_dir: Path) -> None:
    """The model's answer to the describe instruction for every val image -> eval_dir/descriptions.json
    ({image_id: text}): the baseline and multitask arms' "own description", read like SIT's."""
    from sit_vqa.evaluation.vqa import load_eval_records
    from sit_vqa.modeling.checkpoint import load_checkpoint
    from sit_vqa.modeling.generation import generate_texts

    loaded = load_checkpoint(checkpoint, device="cpu")
    records = load_eval_records(config.data, split="val", prompt="baseline").dataset
    first_of_image = list({image_id: i for i, image_id in reversed(list(enumerate(records["image_id"])))}.values())
    images = records.select(sorted(first_of_image))
    instruction = loaded.trained.templates.describe_instruction
    images = images.map(lambda _: {"instruction": instruction})
    settings = loaded.trained.generation(batch_size=config.training.per_device_eval_batch_size,
                                         max_new_tokens=config.training.generation_max_new_tokens)
    texts = generate_texts(loaded.model, loaded.processor, images, settings, progress=False)
    descriptions = {str(image_id): text for image_id, text in zip(images["image_id"], texts)}
    (Path(eval_dir) / DESCRIPTIONS_FILE).write_text(json.dumps(descriptions, indent=1) + "\n", encoding="utf-8")


RESULTS_DIR = "results"  # OUT/results/<run>.json: one file per finished run, written as it ends


def finished_run(out: Path, budget: Budget, job: Job, extra: dict | None = None) -> dict | None:
    """A run an earlier invocation finished with the same settings (None: run it)."""
    path = out / RESULTS_DIR / f"{job.name}.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text(encoding="utf-8"))
    if run.get("settings") != json.loads(json.dumps(job_settings(budget, job, extra))):
        _progress(f"{job.name}: its earlier result was made with other settings; running it again")
        return None
    return run


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker once the process that started it is gone (killed, interrupted, even by
    SIGKILL). An orphaned run would go on training into OUT, beside the same run started by the next invocation."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_all(out: Path, budget: Budget, jobs: Sequence[Job], workers: int, extra: dict | None = None) -> list[dict]:
    """Every job not finished before, `workers` at a time in spawned processes (one thread each). Each result is
    written when its run ends, so an interrupted experiment loses only the runs in flight."""
    from sit_vqa.files import write_json_atomically

    done = {job: finished_run(out, budget, job, extra) for job in jobs}
    todo = [job for job in jobs if done[job] is None]
    started = time.perf_counter()
    _progress(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished in {out}; running {len(todo)}, "
              f"{workers} at a time")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before they import torch
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(train_and_evaluate, out, budget, job, extra): job for job in todo}
        for count, future in enumerate(as_completed(futures), start=1):
            job, run = futures[future], future.result()
            write_json_atomically(out / RESULTS_DIR / f"{job.name}.json", run)
            done[job] = run
            _progress(f"{job.name}: {run['overall']:.2f} (train {run['train_seconds']:.0f} s, evaluation "
                      f"{run['eval_seconds']:.0f} s); {count} of {len(todo)} done, "
                      f"{(time.perf_counter() - started) / 60:.1f} min elapsed")
    return [{**done[job], "reused": job not in todo} for job in jobs]


# ------------------------------------------------------------------------------------------------ main


def world_results(out: Path, budget: Budget, name: str, runs: list[dict]) -> dict:
    config = load_run_config(out, budget, Job(name, "baseline", 0))
    captions = captions_by_image(config.data.eval_captions)
    for run in runs:
        add_run_statistics(run)
        if run["arm"] in ("sit", POOL_ARM):
            run["description"] = description_scores(read_predictions(run["eval_dir"]), captions)
    return {
        "world": name, "description": WORLDS[name], "num_val_questions": runs[0]["num_questions"],
        "references": reference_scores(config), "runs": runs,
        "differences": {other: paired_differences(runs, other) for other in ("baseline", "multitask")},
        "pool": paired_differences(runs, "sit", arm=POOL_ARM, field="held_out_accuracy"),
    }


def code_version() -> dict:
    """Which code made the figures: the package version and, from a git checkout, the commit and whether files
    differed from it (a table is only comparable with another made by the same code)."""
    import subprocess

    from sit_vqa import __version__

    checkout = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):  # no git, or a git that hangs: the figures still get written
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") if (checkout / ".git").exists() else None  # not a site-packages' parent
    changed = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": __version__, "commit": commit, "modified": bool(changed) if commit else None}


def plan_jobs(budget: Budget, worlds: Sequence[str], seeds: Sequence[int], arms: Sequence[str]) -> list[Job]:
    """World by world, seed by seed (every arm of a seed before the next seed: a cut-off experiment still has
    paired arms), the pool row's runs after the arms; neighbours differ in arm, so two workers never prepare
    the same join at once."""
    jobs = []
    for world in worlds:
        jobs += [Job(world, arm, seed) for seed in seeds for arm in arms]
        if world in budget.pool_worlds and "sit" in arms:
            jobs += [Job(world, POOL_ARM, seed) for seed in seeds]
    return jobs


def run_experiment(
    out: str | Path, seeds: Sequence[int] | None = None, quick: bool = False, workers: int = 2,
    arms: Sequence[str] = ARMS, worlds: Sequence[str] | None = None, extra: dict | None = None,
) -> dict:
    from sit_vqa.files import write_json_atomically, write_text_atomically
    from sit_vqa.samples.generated import ensure_sample

    started = time.perf_counter()
    out, budget = Path(out), QUICK if quick else FULL
    worlds, seeds = tuple(worlds or budget.worlds), tuple(budget.seeds if seeds is None else seeds)
    for world in worlds:  # once, before the workers
        ensure_sample(out.absolute() / f"data-{world}", budget.train_images, budget.val_images, style=world)
    jobs = plan_jobs(budget, worlds, seeds, arms)
    runs = run_all(out, budget, jobs, workers, extra)
    results = {
        "budget": {**asdict(budget), "worlds": list(worlds), "seeds": list(seeds)}, "quick": quick,
        "seeds": list(seeds), "workers": workers, "arms": list(dict.fromkeys(job.arm for job in jobs)),
        "run_settings": {**RUN_SETTINGS, **(extra or {})}, "extra_settings": extra or {},
        "margin_over_prior": MARGIN_OVER_PRIOR, "code": code_version(),
        "worlds": [world_results(out, budget, world, [r for r in runs if r["world"] == world]) for world in worlds],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs_reused": sum(run.get("reused", False) for run in runs),
        "run_seconds": round(sum(r["train_seconds"] + r["eval_seconds"] for r in runs), 1),
    }
    write_json_atomically(out / "results.json", results)
    write_text_atomically(out / "table.md", table_markdown(results))
    return results


# The keys each run sets itself (data, arm, seed, steps, where its files go): --set cannot change them.
JOB_KEYS = ("mode", "seed", "tiny_model_seed", "max_steps", "sample_style", "sample_train_images",
            "sample_val_images", "instruction_pool", "sample_dir", "prepared_cache_dir", "output_dir")


def _setting(text: str) -> tuple[str, object]:
    from sit_vqa.config import config_keys

    key, separator, value = text.partition("=")
    if not separator or key not in config_keys() or key in JOB_KEYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KEY=VALUE with KEY a train.py config key (python train.py --help lists them) "
            f"other than the ones each run sets itself ({', '.join(JOB_KEYS)}); the run settings: "
            f"{', '.join(RUN_SETTINGS)}")
    return key, yaml.safe_load(value)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sit_vqa.apps.miniature", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--out", required=True, help="output directory (a rerun skips the runs finished there)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"training seeds (default: {FULL.seeds}; "
                        f"with --quick: {QUICK.seeds})")
    parser.add_argument("--quick", action="store_true", help=f"smaller set and budget ({QUICK})")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="default: all three")
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS),
                        help=f"default: {' '.join(FULL.worlds)}; with --quick: {' '.join(QUICK.worlds)}")
    parser.add_argument("--set", dest="extra", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="override a run setting for every run (sizing; recorded in results.json)")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit 1 when any run is below the best image-blind reference + {MARGIN_OVER_PRIOR:g}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; name a directory (it is created if missing)")
    results = run_experiment(args.out, args.seeds, quick=args.quick, workers=args.workers, arms=args.arms,
                             worlds=args.worlds, extra=dict(args.extra))
    print(table_markdown(results), end="")
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'table.md'}")
    failures = learning_failures(results)
    if failures and args.strict:
        print(f"--strict: {len(failures)} run(s) did not learn to look: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
