"""lmms-eval with sit-vqa's task files and model scores the bundled samples as evaluate.py does, at batch 8 and 1.

Not in CI (lmms-eval is a large install); run once per lmms-eval version, results in docs/INTEGRATIONS.md:

    python3 -m venv /work/venvs/lmms && /work/venvs/lmms/bin/pip install torch==2.13.0     # CPU torch first
    /work/venvs/lmms/bin/pip install -c constraints.txt -e .
    /work/venvs/lmms/bin/pip install --no-deps lmms-eval==0.7.3       # its torchvision requirement: see the doc
    /work/venvs/lmms/bin/pip install -c constraints.txt loguru jsonlines pytablewriter evaluate tenacity pydantic \\
        sqlitedict tqdm-multiprocess zstandard
    /work/venvs/lmms/bin/python bench/clients/lmms_eval_check.py --work /tmp/lmms-check [--steps 40]

It trains a tiny checkpoint on the bundled VQAv2 sample (tests/configs/bundled_sample.yaml: a tiny InstructBLIP
built in code, nothing from a hub), exports it (sit_vqa.apps.export), then
1. evaluate.py scores data/sample's val questions (task vqa) and data/gqa_sample (task gqa), batch 8;
2. lmms-eval runs sit_vqav2 and sit_gqa with `--model sit_vqa` at batch 8 and at batch 1 on the checkpoint, and at
   batch 8 on the export;
and asserts, per question, that every lmms-eval run's raw output, filtered answer and score equal evaluate.py's
generation, parsed answer and accuracy, and that the aggregate equals evaluate.py's figure. Prints and writes
WORK/summary.json; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs" / "bundled_sample.yaml"
MAX_NEW_TOKENS = 128  # the task files' max_new_tokens: evaluate.py gets the same
TASK_ENV = {
    "SIT_VQA_VQAV2_QUESTIONS": "data/sample/v2_OpenEnded_mscoco_val2014_questions.json",
    "SIT_VQA_VQAV2_ANNOTATIONS": "data/sample/v2_mscoco_val2014_annotations.json",
    "SIT_VQA_VQAV2_CAPTIONS": "data/sample/captions_val2014.json",
    "SIT_VQA_VQAV2_IMAGE_DIR": "data/sample/val2014",
    "SIT_VQA_GQA_QUESTIONS": "data/gqa_sample/testdev_balanced_questions.json",
    "SIT_VQA_GQA_IMAGE_DIR": "data/gqa_sample/images",
}
TASKS = {  # lmms-eval task -> (evaluate.py --task and its options, the metric, the evaluate.py figure)
    "sit_vqav2": (["--task", "vqa"], "vqa_accuracy"),
    "sit_gqa": (["--task", "gqa", "--task-data", TASK_ENV["SIT_VQA_GQA_QUESTIONS"],
                 "--image-dir", TASK_ENV["SIT_VQA_GQA_IMAGE_DIR"]], "gqa_accuracy"),
}


def run(command: list[str], log: Path, env: dict | None = None) -> None:
    print("$", " ".join(command), flush=True)
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")


def train(work: Path, steps: int) -> Path:
    run([sys.executable, "train.py", "--config", str(CONFIG), "--output_dir", str(work / "run"),
         "--prepared_cache_dir", str(work / "cache"), "--report_to", "none", "--max_steps", str(steps),
         "--save_steps", str(steps), "--disable_tqdm", "true"], work / "train.log")
    return work / "run" / "final"


def export(checkpoint: Path, work: Path) -> Path:
    run([sys.executable, "-m", "sit_vqa.apps.export", "--checkpoint", str(checkpoint), "--out", str(work / "export")],
        work / "export.log")
    return work / "export"


def evaluate(checkpoint: Path, work: Path) -> dict[str, dict]:
    """task -> {question id: (generation, answer, score in %)} and the report's overall figure."""
    found = {}
    for task, (options, _) in TASKS.items():
        out = work / f"evaluate-{task}"
        run([sys.executable, "evaluate.py", "--config", str(CONFIG), "--checkpoint", str(checkpoint), *options,
             "--batch-size", "8", "--max-new-tokens", str(MAX_NEW_TOKENS), "--device", "cpu", "--no-progress",
             "--out", str(out)], work / f"evaluate-{task}.log")
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        score = "accuracy" if task == "sit_vqav2" else "correct"
        per_question = {str(r["question_id"]): (r["generation"], r["answer"], 100 * float(r[score])) for r in rows}
        report = json.loads((out / "report.json").read_text())
        found[task] = {"questions": per_question, "overall": report["overall"]}
        _reference_ids[task] = list(per_question)
    return found


_reference_ids: dict[str, list[str]] = {}  # evaluate.py's question ids in file order, per task


def lmms_eval(model_dir: Path, batch_size: int, out: Path) -> dict[str, dict]:
    """task -> {question id: (raw output, filtered answer, score)} and the aggregate lmms-eval printed."""
    from sit_vqa.integrations.lmms_eval import TASKS_DIR

    env = {**os.environ, **{name: str(REPO / path) for name, path in TASK_ENV.items()},
           "HF_DATASETS_CACHE": str(out / "hf-datasets"), "HF_HUB_OFFLINE": "1"}
    lmms_eval_bin = str(Path(sys.executable).with_name("lmms-eval"))
    run([lmms_eval_bin, "--model", "sit_vqa", "--model_args", f"pretrained={model_dir},device=cpu",
         "--include_path", str(TASKS_DIR), "--tasks", ",".join(TASKS), "--batch_size", str(batch_size),
         "--log_samples", "--output_path", str(out)], out.with_suffix(".log"), env)
    results = json.loads(Path(_one(glob.glob(f"{out}/**/*_results.json", recursive=True))).read_text())
    found = {}
    for task, (_, metric) in TASKS.items():
        samples_file = _one(glob.glob(f"{out}/**/*_samples_{task}.jsonl", recursive=True))
        # lmms-eval 0.7.3 logs no doc here: doc_id is the document's index, in file order (as evaluate.py's rows)
        samples = sorted((json.loads(line) for line in Path(samples_file).read_text().splitlines()),
                         key=lambda sample: sample["doc_id"])
        ids = list(_reference_ids[task])
        per_question = {ids[s["doc_id"]]: (s["resps"][0], s["filtered_resps"], s[metric]) for s in samples}
        found[task] = {"questions": per_question, "overall": results["results"][task][f"{metric},sit-answer"]}
    return found


def _one(paths: list[str]) -> str:
    if len(paths) != 1:
        sys.exit(f"expected one lmms-eval output file, found {paths}")
    return paths[0]


def differences(reference: dict, other: dict, name: str) -> list[str]:
    problems = []
    for task, ours in reference.items():
        theirs = other[task]
        if set(theirs["questions"]) != set(ours["questions"]):
            problems.append(f"{name} {task}: other questions ({len(theirs['questions'])} vs {len(ours['questions'])})")
            continue
        for question_id, expected in ours["questions"].items():
            got = theirs["questions"][question_id]
            if got[:2] != expected[:2] or not math.isclose(got[2], expected[2], abs_tol=1e-9):
                problems.append(f"{name} {task} question {question_id}: {got!r} != evaluate.py's {expected!r}")
        # evaluate.py reports the official figure rounded to 2 decimals
        if round(theirs["overall"], 2) != round(ours["overall"], 2):
            problems.append(f"{name} {task}: overall {theirs['overall']} != evaluate.py's {ours['overall']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--steps", type=int, default=40, help="training steps of the tiny checkpoint")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint to check instead of training one "
                        "(e.g. the quickstart's final/: its outputs carry the Description:/Answer: markers)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=False)
    checkpoint = args.checkpoint.resolve() if args.checkpoint else train(args.work, args.steps)
    exported = export(checkpoint, args.work)
    reference = evaluate(checkpoint, args.work)
    runs = {"checkpoint, batch 8": lmms_eval(checkpoint, 8, args.work / "lmms-b8"),
            "checkpoint, batch 1": lmms_eval(checkpoint, 1, args.work / "lmms-b1"),
            "export, batch 8": lmms_eval(exported, 8, args.work / "lmms-export-b8")}
    problems = [problem for name, found in runs.items() for problem in differences(reference, found, name)]
    summary = {
        "lmms_eval": version("lmms_eval"), "torch": version("torch"), "transformers": version("transformers"),
        "steps": None if args.checkpoint else args.steps, "checkpoint": str(checkpoint),
        "evaluate.py": {task: {"questions": len(found["questions"]), "overall": found["overall"],
                               "with_answer_marker": sum(re.search(r"(?im)^\s*answer\s*:", g) is not None
                                                         for g, _, _ in found["questions"].values())}
                        for task, found in reference.items()},
        "lmms-eval": {name: {task: found[task]["overall"] for task in TASKS} for name, found in runs.items()},
        "differences": problems,
    }
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
