"""The miniature experiment: baseline vs multitask vs SIT, a tiny InstructBLIP, procedural scenes, a CPU.

    python -m sit_vqa.apps.miniature --out runs/miniature                 # 2 worlds x 3 arms x 3 seeds
    python -m sit_vqa.apps.miniature --out runs/miniature-quick --quick   # the named world, 3 arms, 1 seed

Measured figures, the machine and the times: docs/MINIATURE.md.

1. Generates, per world, a procedural train/val set in the official VQAv2 + COCO formats
   (`sit_vqa.samples.scenes`) into OUT/data-<world>. Two worlds, because what the captions say decides what
   describing first can carry to the answer: "named" (every caption names every shape) and "simple"
   (COCO-like: more colours, kinds and backgrounds, varied captions, some naming no shape).
2. Trains one tiny InstructBLIP (every weight trains, as in the quickstart) per world, arm and seed with the
   same steps, batch and schedule, through train.py's own `run_training`: `baseline` (question -> answer),
   `multitask` (the baseline records plus separate "Describe the image." records: the same caption
   supervision, not in sequence) and `sit` (question -> "Description: <caption>\nAnswer: <answer>"). The
   same seeds in every arm (model init and data order), so the arms are paired. Runs go two at a time, one
   thread each, in separate processes.
3. Scores each on the val split through evaluate.py's own `run_evaluation` (official VQAv2 accuracy, the SIT
   prompt for the sit arm). The other arms are also asked to describe each val image. Per arm: the share of
   questions whose answer can be read from the model's own description (`answer_from_description`) and the
   accuracy there vs elsewhere; for SIT also the description's token F1 / exact match against the five
   reference captions and how often its answer agrees with its own description.
4. The paired differences SIT - baseline and SIT - multitask per answer type, with a 95% bootstrap interval
   that resamples seeds and questions (`paired_bootstrap`), and a verdict: "SIT better", "SIT worse" or "not
   separated" (the interval holds 0).
5. Image-blind references on the same val questions: the majority answer, each question type's most frequent
   train answer, and the question prior (each question text's most frequent train answer). A run that does
   not beat them has not learned to look.

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
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ARMS = ("baseline", "multitask", "sit")
COLUMNS = ("overall", "yes/no", "number", "other")
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


FULL = Budget(train_images=2000, val_images=200, max_steps=800, worlds=("named", "simple"), seeds=(0, 1, 2))
QUICK = Budget(train_images=2000, val_images=100, max_steps=800, worlds=("named",), seeds=(0,))
# What learning_failures asks of every arm beyond the image-blind question prior (overall points): a model
# that ignores the image reaches the prior and no more.
MARGIN_OVER_PRIOR = 3.0
BOOTSTRAP_SAMPLES = 2000

# Every run's settings (config keys, as on train.py's command line) besides data, mode, seed and steps:
# the quickstart's model and optimiser (configs/quickstart.yaml): a ~0.4 M-weight InstructBLIP (hidden 64,
# 4 heads, 2 layers, 64 px images in 8 px patches, 8 query tokens, no dropout), every weight trained; AdamW
# 2e-3, weight decay 0.01, 50 warm-up steps, cosine, batch 32, clip 1 (the prototype's, at twice its rate:
# issue #17 measured 1e-3 too slow to look within these budgets at this width).
RUN_SETTINGS = {
    "model_type": "instructblip", "tiny_model": "decoder", "tiny_hidden_size": 64, "tiny_num_layers": 2,
    "tiny_image_size": 64, "tiny_patch_size": 8, "tiny_num_query_tokens": 8, "tiny_num_heads": 4,
    "tiny_dropout": 0.0, "tiny_random_query_tokens": True, "train_all": True, "caption_policy": "random",
    "use_cpu": True, "learning_rate": 2e-3, "weight_decay": 0.01,
    "warmup_steps": 50, "lr_scheduler_type": "cosine", "max_grad_norm": 1.0, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64, "logging_steps": 50, "save_strategy": "no", "report_to": "none",
    "disable_tqdm": True, "dataloader_num_workers": 0, "overwrite_output_dir": True,
}  # fmt: skip


@dataclass(frozen=True)
class Job:
    world: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.world}-{self.arm}-seed{self.seed}"


# ------------------------------------------------------------------------------------------------- runs


def run_overrides(out: Path, budget: Budget, job: Job) -> list[str]:
    settings = {
        **RUN_SETTINGS, "mode": job.arm, "seed": job.seed, "tiny_model_seed": job.seed,
        "max_steps": budget.max_steps, "sample_style": job.world, "sample_dir": str(out.absolute() / f"data-{job.world}"),
        "sample_train_images": budget.train_images, "sample_val_images": budget.val_images,
        # absolute: a relative sample_dir or prepared_cache_dir would lie under the cache root, not in OUT
        "prepared_cache_dir": str(out.absolute() / "cache"), "output_dir": str(out / "runs" / job.name),
    }
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def load_run_config(out: Path, budget: Budget, job: Job):
    from sit_vqa.config import load_config

    return load_config(None, run_overrides(out, budget, job))


def train_and_evaluate(out: Path, budget: Budget, job: Job) -> dict:
    """One world, arm and seed, in a worker process with one thread: train, score on val, and (arms that do
    not describe in their answers) ask the model to describe each val image. Logs go to OUT/logs/."""
    import torch

    torch.set_num_threads(1)
    from sit_vqa.evaluation.options import EvalOptions
    from sit_vqa.evaluation.runner import run_evaluation
    from sit_vqa.training.run import run_training

    (out / "logs").mkdir(parents=True, exist_ok=True)
    with open(out / "logs" / f"{job.name}.log", "w", encoding="utf-8", buffering=1) as log:  # line by line
        sys.stdout = sys.stderr = log
        logging.basicConfig(level=logging.WARNING, stream=log, force=True)
        config = load_run_config(out, budget, job)
        started = time.perf_counter()
        final = run_training(config)
        trained = time.perf_counter()
        evaluation = run_evaluation(config, EvalOptions(checkpoint=final, out_dir=out / "eval" / job.name,
                                                        progress=False))
        if job.arm != "sit":
            write_image_descriptions(config, final, evaluation.out_dir)
        scored = time.perf_counter()
    report = evaluation.report
    return {
        **asdict(job), "name": job.name, "overall": report["overall"], "perAnswerType": report["perAnswerType"],
        "answer_marker_rate": report["answer_marker_rate"], "num_questions": report["num_questions"],
        "eval_dir": str(evaluation.out_dir), "train_seconds": round(trained - started, 1),
        "eval_seconds": round(scored - trained, 1),
    }


DESCRIPTIONS_FILE = "descriptions.json"


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


def run_all(out: Path, budget: Budget, jobs: Sequence[Job], workers: int) -> list[dict]:
    """Every job, `workers` at a time in spawned processes (one thread each)."""
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before they import torch
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(train_and_evaluate, out, budget, job) for job in jobs]
        return [future.result() for future in futures]


# --------------------------------------------------------------------------------------- references


def reference_scores(config) -> dict[str, dict]:
    """The image-blind references on the val questions, scored with the official metric."""
    from sit_vqa.evaluation.vqa import load_eval_records, score_generations

    val = load_eval_records(config.data, split="val", prompt="baseline").dataset
    train = load_eval_records(config.data, split="train", prompt="baseline").dataset
    majority = Counter(val["answer"]).most_common(1)[0][0]
    by_question: dict[str, Counter] = defaultdict(Counter)
    for question, answer in zip(train["question"], train["answer"]):
        by_question[question][answer] += 1
    prior = [by_question[q].most_common(1)[0][0] if q in by_question else majority for q in val["question"]]
    by_type: dict[str, Counter] = defaultdict(Counter)
    for question_type, answer in zip(train["question_type"], train["answer"]):
        by_type[question_type][answer] += 1
    type_majority = [by_type[t].most_common(1)[0][0] if t in by_type else majority for t in val["question_type"]]
    references = {}
    for name, answers in (("majority", [majority] * len(val)), ("question-type majority", type_majority),
                          ("question prior", prior)):
        metrics = score_generations(val, answers).metrics
        references[name] = {"overall": metrics["overall"], "perAnswerType": metrics["perAnswerType"]}
    references["majority"]["answer"] = majority
    return references


# ------------------------------------------------------------------------------- the SIT description


NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def _shape_words():
    from sit_vqa.samples.scenes import BACKGROUND_COLORS, SHAPE_COLORS, SHAPE_KINDS

    return sorted(SHAPE_COLORS), list(SHAPE_KINDS), sorted(BACKGROUND_COLORS)


def read_description(description: str) -> dict:
    """What a generated description states about the scene, in the sample's caption language:
    {"shapes": Counter of (colour, kind) or None when it lists none, "total": int or None, "background": str or None}."""
    colors, kinds, backgrounds = _shape_words()
    text = description.lower()
    numbers = "|".join(NUMBERS)
    listed = re.findall(rf"\b({numbers})\s+({'|'.join(colors)})\s+({'|'.join(kinds)})s?\b", text)
    shapes = Counter()
    for number, color, kind in listed:
        shapes[(color, kind)] += NUMBERS[number]
    total_match = re.search(rf"\b({numbers})\s+(?:colored\s+)?shapes?\b", text)
    total = NUMBERS[total_match.group(1)] if total_match else (sum(shapes.values()) if shapes else None)
    background_match = re.search(rf"\b({'|'.join(backgrounds)})\s+(?:background|backdrop)\b|on\s+({'|'.join(backgrounds)})\b", text)
    background = next((g for g in background_match.groups() if g), None) if background_match else None
    return {"shapes": shapes or None, "total": total, "background": background}


def answer_from_description(question: str, description: str | None) -> str | None:
    """The answer the description implies for one of the sample's question forms, or None when it implies
    none (no description, the question's facts not stated, an unknown question form)."""
    if not description:
        return None
    scene = read_description(description)
    shapes, q = scene["shapes"], question.lower().rstrip("?").strip()
    colors, kinds, _ = _shape_words()
    if q.startswith("how many shapes"):
        return None if scene["total"] is None else str(scene["total"])
    if q == "what color is the background":
        return scene["background"]
    if shapes is None:
        return None
    if match := re.fullmatch(r"how many (\w+?)s are there", q):
        return str(sum(n for (_, kind), n in shapes.items() if kind == match.group(1)))
    if match := re.fullmatch(r"is there an? (\w+) (\w+)", q):
        return "yes" if shapes.get((match.group(1), match.group(2))) else "no"
    if match := re.fullmatch(r"are there any (\w+) shapes", q):
        return "yes" if any(color == match.group(1) for color, _ in shapes) else "no"
    if match := re.fullmatch(r"what color is the (\w+)", q):
        found = [color for (color, kind), n in shapes.items() if kind == match.group(1) for _ in range(n)]
        return found[0] if len(found) == 1 else None
    if match := re.fullmatch(r"what shape is the (\w+) object", q):
        found = [kind for (color, kind), n in shapes.items() if color == match.group(1) for _ in range(n)]
        return found[0] if len(found) == 1 else None
    if match := re.fullmatch(r"is the (\w+) (\w+)", q):
        found = [color for (color, kind), n in shapes.items() if kind == match.group(1) for _ in range(n)]
        return ("yes" if found[0] == match.group(2) else "no") if len(found) == 1 else None
    return None


def _tokens(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = _tokens(prediction), _tokens(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def description_scores(predictions: list[dict], captions_by_image: dict[int, list[str]]) -> dict[str, float]:
    """Over SIT outputs: token F1 with the best-matching reference caption of the image, exact match
    (same tokens as one of them), the share with a description, and how often the answer agrees with the
    description's implied answer (over the outputs whose description implies one; `coverage`: their share)."""
    f1s, exact, implied, agree = [], 0, 0, 0
    for prediction in predictions:
        description = prediction["description"] or ""
        references = captions_by_image[prediction["image_id"]]
        f1s.append(max(token_f1(description, reference) for reference in references))
        exact += any(_tokens(description) == _tokens(reference) for reference in references)
        expected = answer_from_description(prediction["question"], prediction["description"])
        if expected is not None:
            implied += 1
            agree += _tokens(prediction["answer"]) == _tokens(expected)
    count = len(predictions)
    return {
        "description_token_f1": round(100 * sum(f1s) / count, 2),
        "description_exact_match": round(100 * exact / count, 2),
        "description_rate": round(100 * sum(p["description"] is not None for p in predictions) / count, 2),
        "answer_agrees_with_description": round(100 * agree / implied, 2) if implied else None,
        "agreement_coverage": round(100 * implied / count, 2),
    }


def captions_by_image(captions_path: str | Path) -> dict[int, list[str]]:
    return captions_by_image_from(json.loads(Path(captions_path).read_text(encoding="utf-8")))


def captions_by_image_from(document: dict) -> dict[int, list[str]]:
    """image id -> its reference captions, from a COCO captions document."""
    by_image: dict[int, list[str]] = defaultdict(list)
    for annotation in document["annotations"]:
        by_image[annotation["image_id"]].append(annotation["caption"])
    return by_image


def read_predictions(eval_dir: str | Path) -> list[dict]:
    with open(Path(eval_dir) / "predictions.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# ------------------------------------------------------------------------------------------ statistics


def question_accuracies(predictions: list[dict]) -> dict[int, float]:
    """question id -> official VQA accuracy (0-100) of one run's answer."""
    return {p["question_id"]: 100 * p["accuracy"] for p in predictions}


def own_descriptions(arm: str, predictions: list[dict], eval_dir: str | Path) -> list[str | None]:
    """Per prediction, the description the model itself gave of the image: SIT's is part of its answer; the
    other arms were asked the describe instruction once per image (write_image_descriptions)."""
    if arm == "sit":
        return [p["description"] for p in predictions]
    by_image = json.loads((Path(eval_dir) / DESCRIPTIONS_FILE).read_text(encoding="utf-8"))
    return [by_image.get(str(p["image_id"])) for p in predictions]


def readable_split(predictions: list[dict], descriptions: list[str | None]) -> dict[str, float | None]:
    """The share of questions whose answer can be read from the model's own description (it implies one, by
    `answer_from_description`), the share where that implied answer is right, and the model's accuracy on
    those questions vs the rest: does a run answer better where its description carries the answer?"""
    readable, rest, right = [], [], 0
    for prediction, description in zip(predictions, descriptions):
        implied = answer_from_description(prediction["question"], description)
        (rest if implied is None else readable).append(100 * prediction["accuracy"])
        consensus = Counter(prediction["gt_answers"]).most_common(1)[0][0]
        right += implied is not None and _tokens(implied) == _tokens(consensus)
    mean = lambda values: round(sum(values) / len(values), 2) if values else None  # noqa: E731
    return {"readable_share": round(100 * len(readable) / len(predictions), 2),
            "readable_right_share": round(100 * right / len(predictions), 2),
            "accuracy_readable": mean(readable), "accuracy_rest": mean(rest)}


def paired_bootstrap(differences, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean of a seeds x questions array of paired differences, with a 95% percentile interval from resampling
    seeds and questions alike (with replacement): the seed-to-seed spread counts, not only the questions'."""
    import numpy as np

    differences = np.asarray(differences, dtype=float)
    n_seeds, n_questions = differences.shape
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for b in range(samples):
        seeds = rng.integers(0, n_seeds, n_seeds)
        questions = rng.integers(0, n_questions, n_questions)
        means[b] = differences[np.ix_(seeds, questions)].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(differences.mean()), 2), "low": round(float(low), 2), "high": round(float(high), 2)}


def verdict(interval: dict[str, float]) -> str:
    if interval["low"] > 0:
        return "SIT better"
    if interval["high"] < 0:
        return "SIT worse"
    return "not separated"


def paired_differences(runs: list[dict], other: str) -> dict[str, dict]:
    """SIT - `other` per column, paired by seed and question (only seeds both arms ran)."""
    by_arm = {arm: {run["seed"]: run for run in runs if run["arm"] == arm} for arm in ("sit", other)}
    seeds = sorted(set(by_arm["sit"]) & set(by_arm[other]))
    if not seeds:
        return {}
    first = by_arm["sit"][seeds[0]]
    question_ids = sorted(first["question_accuracy"])
    types = first["answer_types"]
    figures = {}
    for column in COLUMNS:
        kept = [q for q in question_ids if column == "overall" or types[q] == column]
        if not kept:
            continue
        differences = [[by_arm["sit"][s]["question_accuracy"][q] - by_arm[other][s]["question_accuracy"][q]
                        for q in kept] for s in seeds]
        figures[column] = paired_bootstrap(differences)
    return figures


def add_run_statistics(run: dict) -> None:
    """Per-question accuracies, answer types, the own-description split (and SIT's description scores)."""
    predictions = sorted(read_predictions(run["eval_dir"]), key=lambda p: p["question_id"])
    run["question_accuracy"] = question_accuracies(predictions)
    run["answer_types"] = {p["question_id"]: p["answer_type"] for p in predictions}
    run["own_description"] = readable_split(predictions, own_descriptions(run["arm"], predictions, run["eval_dir"]))


# ------------------------------------------------------------------------------------------ the table


def _value(row: dict, column: str) -> float:
    return row["overall"] if column == "overall" else row["perAnswerType"].get(column, 0.0)


def _spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"


def _spread_known(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return _spread(known) if known else "n/a"


def _interval(figure: dict | None) -> str:
    return "n/a" if figure is None else f"{figure['mean']:+.1f} [{figure['low']:+.1f}, {figure['high']:+.1f}]"


OWN_DESCRIPTION_COLUMNS = {
    "readable_share": "answer readable from own description (%)",
    "accuracy_readable": "accuracy there",
    "accuracy_rest": "accuracy elsewhere",
}


def world_table(world: dict) -> list[str]:
    runs, seeds = world["runs"], sorted({run["seed"] for run in world["runs"]})
    lines = [
        f"### World `{world['world']}`: {WORLDS[world['world']]}", "",
        f"VQA accuracy on {world['num_val_questions']} val questions (official VQAv2 metric), "
        f"seed(s) {', '.join(map(str, seeds))}: mean (min-max)", "",
        "| Arm | " + " | ".join(COLUMNS + tuple(OWN_DESCRIPTION_COLUMNS.values())) + " |",
        "|---|" + "---:|" * (len(COLUMNS) + len(OWN_DESCRIPTION_COLUMNS)),
    ]
    blank = " |" * len(OWN_DESCRIPTION_COLUMNS)
    for name, reference in world["references"].items():
        lines.append(f"| {name} (image-blind) | " + " | ".join(f"{_value(reference, c):.1f}" for c in COLUMNS) + " |"
                     + blank)
    for arm in ARMS:
        rows = [run for run in runs if run["arm"] == arm]
        if rows:
            own = [_spread([r["own_description"][k] for r in rows]) if all(r["own_description"][k] is not None
                   for r in rows) else "n/a" for k in OWN_DESCRIPTION_COLUMNS]
            lines.append(f"| {arm} | " + " | ".join([_spread([_value(r, c) for r in rows]) for c in COLUMNS] + own)
                         + " |")
    lines += ["", "Paired differences (points; mean over seeds and questions, [95% bootstrap interval over seeds "
              "and questions]):", "", "| Difference | " + " | ".join(COLUMNS) + " | overall verdict |",
              "|---|" + "---:|" * len(COLUMNS) + "---|"]
    for other, figures in world["differences"].items():
        if figures:
            lines.append(f"| SIT - {other} | " + " | ".join(_interval(figures.get(c)) for c in COLUMNS)
                         + f" | {verdict(figures['overall'])} |")
    sit = [run["description"] for run in runs if run["arm"] == "sit"]
    if sit:
        lines += ["", "SIT outputs: " + "; ".join(
            f"{label} {_spread_known([d[key] for d in sit])}"
            for key, label in (("description_token_f1", "description token F1 with the best reference caption"),
                               ("description_exact_match", "identical to a reference caption (%)"),
                               ("answer_agrees_with_description", "answer agrees with its own description (%)"))
        ) + "."]
    return lines + [""]


def table_markdown(results: dict) -> str:
    lines = []
    for world in results["worlds"]:
        lines += world_table(world)
    lines.append(f"Budget: {results['budget']}; wall time {results['wall_seconds'] / 60:.1f} min "
                 f"({results['workers']} runs at a time, one thread each).")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def learning_failures(
    results: dict, margin_over_prior: float = MARGIN_OVER_PRIOR, arms: Sequence[str] = ARMS
) -> list[str]:
    """Runs of `arms` that did not learn to look: overall accuracy below the best image-blind reference
    (question prior or question-type majority, whichever is higher on that world) + margin. Empty when every
    such run looked."""
    failures = []
    for world in results["worlds"]:
        blind = best_image_blind(world["references"])
        for run in world["runs"]:
            if run["arm"] in arms and run["overall"] < blind + margin_over_prior:
                failures.append(f"{run['name']}: {run['overall']:.2f} < image-blind {blind:.2f} + {margin_over_prior}")
    return failures


def best_image_blind(references: dict[str, dict]) -> float:
    return max(reference["overall"] for reference in references.values())


def world_results(out: Path, budget: Budget, name: str, runs: list[dict]) -> dict:
    config = load_run_config(out, budget, Job(name, "baseline", 0))
    captions = captions_by_image(config.data.eval_captions)
    for run in runs:
        add_run_statistics(run)
        if run["arm"] == "sit":
            run["description"] = description_scores(read_predictions(run["eval_dir"]), captions)
    return {
        "world": name, "num_val_questions": runs[0]["num_questions"], "references": reference_scores(config),
        "runs": runs, "differences": {other: paired_differences(runs, other) for other in ("baseline", "multitask")},
    }


def run_experiment(
    out: str | Path, seeds: Sequence[int] | None = None, quick: bool = False, workers: int = 2,
    arms: Sequence[str] = ARMS, worlds: Sequence[str] | None = None,
) -> dict:
    from sit_vqa.samples.generated import ensure_sample

    started = time.perf_counter()
    out, budget = Path(out), QUICK if quick else FULL
    worlds, seeds = tuple(worlds or budget.worlds), tuple(budget.seeds if seeds is None else seeds)
    for world in worlds:  # once, before the workers
        ensure_sample(out.absolute() / f"data-{world}", budget.train_images, budget.val_images, style=world)
    # neighbours differ in arm: two workers never prepare the same join at once
    jobs = [Job(world, arm, seed) for world in worlds for seed in seeds for arm in arms]
    runs = run_all(out, budget, jobs, workers)
    results = {
        "budget": {**asdict(budget), "worlds": list(worlds), "seeds": list(seeds)}, "quick": quick,
        "seeds": list(seeds), "workers": workers,
        "run_settings": RUN_SETTINGS,
        "worlds": [world_results(out, budget, world, [r for r in runs if r["world"] == world]) for world in worlds],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table_markdown(results), encoding="utf-8")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sit_vqa.apps.miniature", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"training seeds (default: {FULL.seeds}; "
                        f"with --quick: {QUICK.seeds})")
    parser.add_argument("--quick", action="store_true", help=f"smaller set and budget ({QUICK})")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="default: all three")
    parser.add_argument("--worlds", nargs="+", choices=list(WORLDS),
                        help=f"default: {' '.join(FULL.worlds)}; with --quick: {' '.join(QUICK.worlds)}")
    args = parser.parse_args(argv)
    results = run_experiment(args.out, args.seeds, quick=args.quick, workers=args.workers, arms=args.arms,
                             worlds=args.worlds)
    print(table_markdown(results), end="")
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
