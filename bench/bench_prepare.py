"""Benchmark: `sit_vqa.apps.prepare` end to end on VQAv2-train-scale inputs, next to a plain stdlib join.

Run (from the repository root, venv active):

    python bench/bench_prepare.py                      # generate into a temp dir, time both, clean up
    python bench/bench_prepare.py --workdir /tmp/bench  # keep the generated inputs there (reused next run)
    python bench/bench_prepare.py --scale 0.1           # a smaller run for a quick look

The inputs are generated deterministically in the official formats at the size of VQAv2 train2014:
443,757 questions with 10 answers each over 82,783 images, and 414,113 COCO captions (about 340 MB of
annotations JSON). Each contender runs in its own subprocess, under /usr/bin/time -v where present, so
wall time and peak RSS are those of a clean process:

- `prepare`: `python -m sit_vqa.apps.prepare ... --mode sit` (read, validate, join, build targets, save Arrow);
- `stdlib`: `json.load` of the three files and a dict join building one record dict per question
  (no validation, no writing) -- the plain way, for scale.

Figures are printed; record them in docs/PERFORMANCE.md. This is a benchmark, never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN_QUESTIONS = 443_757
TRAIN_IMAGES = 82_783
TRAIN_CAPTIONS = 414_113
SPLIT = "train2014"
CHUNK = 20_000  # records serialised per write: bounds the generator's memory
REPO = Path(__file__).resolve().parents[1]

QUESTION_TYPES = [
    ("what is the", "other"), ("is the", "yes/no"), ("how many", "number"), ("what color is the", "other"),
    ("is there a", "yes/no"), ("what", "other"), ("are the", "yes/no"), ("does the", "yes/no"),
    ("what kind of", "other"), ("where is the", "other"), ("is this a", "yes/no"), ("what is the man", "other"),
]
NOUNS = ("man", "woman", "dog", "cat", "bus", "train", "pizza", "table", "kite", "bench", "clock", "giraffe",
         "surfboard", "umbrella", "plate", "horse", "sign", "truck", "laptop", "bed", "boat", "street", "field")
VERBS = ("holding", "riding", "eating", "sitting on", "standing near", "looking at", "playing with", "carrying")
OTHER_ANSWERS = ("white", "black", "red", "blue", "green", "tennis", "baseball", "frisbee", "kitchen", "grass",
                 "water", "left", "right", "wood", "skiing", "surfing", "pizza", "dog", "cat", "snow", "sun",
                 "table", "bathroom", "street", "man", "woman", "umbrella", "nothing", "brown", "yellow")


def generate_inputs(workdir: Path, scale: float = 1.0, seed: int = 0) -> dict[str, Path]:
    """Write questions, annotations and captions files (official formats) into workdir; reuse them if present."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "questions": workdir / f"v2_OpenEnded_mscoco_{SPLIT}_questions.json",
        "annotations": workdir / f"v2_mscoco_{SPLIT}_annotations.json",
        "captions": workdir / f"captions_{SPLIT}.json",
        "image_dir": workdir / SPLIT,
    }
    marker = workdir / f"generated-scale{scale}-seed{seed}-with-images.ok"
    if marker.exists():
        return paths
    rng = np.random.default_rng(seed)
    n_images = round(TRAIN_IMAGES * scale)
    n_questions = round(TRAIN_QUESTIONS * scale)
    n_captions = round(TRAIN_CAPTIONS * scale)
    image_ids = np.sort(rng.choice(np.arange(9, 581_930), size=n_images, replace=False))
    questions_per_image = _spread(rng, n_images, n_questions)
    captions_per_image = _spread(rng, n_images, n_captions)

    _write_questions_and_annotations(paths, rng, image_ids, questions_per_image)
    _write_captions(paths["captions"], rng, image_ids, captions_per_image)
    # Empty image files: without --check-images, prepare only checks that each image exists (a stat).
    paths["image_dir"].mkdir(exist_ok=True)
    for image_id in image_ids.tolist():
        (paths["image_dir"] / f"COCO_{SPLIT}_{image_id:012d}.jpg").touch()
    marker.touch()
    return paths


def _spread(rng, n_images: int, total: int) -> np.ndarray:
    """Per-image counts summing to total: everyone gets the floor, a random set of images one more."""
    base, extra = divmod(total, n_images)
    counts = np.full(n_images, base)
    counts[rng.choice(n_images, size=extra, replace=False)] += 1
    return counts


def _write_questions_and_annotations(paths, rng, image_ids, questions_per_image) -> None:
    header = {"info": {"description": "synthetic VQAv2-scale benchmark data"}, "license": {"name": "none"},
              "data_subtype": SPLIT, "data_type": "mscoco"}
    with open(paths["questions"], "w") as questions_file, open(paths["annotations"], "w") as annotations_file:
        questions_file.write(json.dumps({**header, "task_type": "Open-Ended"})[:-1] + ', "questions": [')
        annotations_file.write(json.dumps(header)[:-1] + ', "annotations": [')
        questions, annotations, first = [], [], True
        for image_id, count in zip(image_ids.tolist(), questions_per_image.tolist(), strict=True):
            for k in range(count):
                question, annotation = _question_record(rng, image_id, image_id * 1000 + k)
                questions.append(question)
                annotations.append(annotation)
            if len(questions) >= CHUNK:
                _flush(questions_file, questions, first)
                _flush(annotations_file, annotations, first)
                first = False
        _flush(questions_file, questions, first)
        _flush(annotations_file, annotations, first)
        questions_file.write("]}")
        annotations_file.write("]}")


def _question_record(rng, image_id: int, question_id: int) -> tuple[dict, dict]:
    question_type, answer_type = QUESTION_TYPES[rng.integers(len(QUESTION_TYPES))]
    noun, verb = NOUNS[rng.integers(len(NOUNS))], VERBS[rng.integers(len(VERBS))]
    question = f"{question_type.capitalize()} {noun} {verb} in this picture?"
    if answer_type == "yes/no":
        choices = ("yes", "no")
    elif answer_type == "number":
        choices = tuple(str(n) for n in range(10))
    else:
        choices = OTHER_ANSWERS
    consensus = choices[rng.integers(len(choices))]
    noisy = rng.random(10) < 0.25  # about a quarter of the annotators disagree
    picks = rng.integers(len(choices), size=10)
    answers = [
        {"answer": choices[p] if flip else consensus, "answer_confidence": "maybe" if flip else "yes",
         "answer_id": i + 1}
        for i, (flip, p) in enumerate(zip(noisy.tolist(), picks.tolist(), strict=True))
    ]
    annotation = {"question_type": question_type, "multiple_choice_answer": consensus, "answers": answers,
                  "image_id": image_id, "answer_type": answer_type, "question_id": question_id}
    return {"image_id": image_id, "question": question, "question_id": question_id}, annotation


def _write_captions(path: Path, rng, image_ids, captions_per_image) -> None:
    with open(path, "w") as file:
        file.write('{"info": {"description": "synthetic COCO-scale captions"}, "licenses": [], "images": ')
        images = [
            {"license": 3, "file_name": f"COCO_{SPLIT}_{image_id:012d}.jpg",
             "coco_url": f"http://images.cocodataset.org/{SPLIT}/COCO_{SPLIT}_{image_id:012d}.jpg",
             "height": 480, "width": 640, "date_captured": "2013-11-14 16:28:13",
             "flickr_url": f"http://farm4.staticflickr.com/1/{image_id}_abc.jpg", "id": image_id}
            for image_id in image_ids.tolist()
        ]
        file.write(json.dumps(images))
        file.write(', "annotations": [')
        annotations, first, annotation_id = [], True, 1
        for image_id, count in zip(image_ids.tolist(), captions_per_image.tolist(), strict=True):
            for _ in range(count):
                noun, verb, other = (NOUNS[i] for i in rng.integers(len(NOUNS), size=3))
                caption = f"A {noun} {VERBS[rng.integers(len(VERBS))]} a {other} next to a {verb}."
                annotations.append({"image_id": image_id, "id": annotation_id, "caption": caption})
                annotation_id += 1
            if len(annotations) >= CHUNK:
                _flush(file, annotations, first)
                first = False
        _flush(file, annotations, first)
        file.write("]}")


def _flush(file, records: list, first: bool) -> None:
    if records:
        file.write(("" if first else ", ") + json.dumps(records)[1:-1])
        records.clear()


def stdlib_join(questions_path: str, annotations_path: str, captions_path: str) -> int:
    """The plain way: json.load everything, index by dicts, one record dict per question."""
    with open(questions_path) as file:
        questions = json.load(file)["questions"]
    with open(annotations_path) as file:
        annotations = {a["question_id"]: a for a in json.load(file)["annotations"]}
    with open(captions_path) as file:
        captions_file = json.load(file)
    captions: dict[int, list[str]] = {}
    for caption in captions_file["annotations"]:
        captions.setdefault(caption["image_id"], []).append(caption["caption"])
    records = []
    for question in questions:
        annotation = annotations[question["question_id"]]
        caption = captions[question["image_id"]][0]
        records.append({
            "question_id": question["question_id"], "image_id": question["image_id"],
            "question": question["question"], "caption": caption, "answer": annotation["multiple_choice_answer"],
            "answers": [a["answer"] for a in annotation["answers"]], "answer_type": annotation["answer_type"],
            "question_type": annotation["question_type"],
            "target": f"Description: {caption}\nAnswer: {annotation['multiple_choice_answer']}",
        })
    return len(records)


def measure(command: list[str]) -> tuple[float, float, str]:
    """Run command in a subprocess; return (wall seconds, peak RSS in MB, its output)."""
    use_time = Path("/usr/bin/time").exists()
    full = ["/usr/bin/time", "-v", *command] if use_time else command
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    result = subprocess.run(full, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    if use_time:
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    else:  # children's peak: valid because each contender is the only child measured at that point
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kb / 1024, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where to generate (and keep) the inputs; default: a temp dir")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VQAv2-train size (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stdlib-join", nargs=3, metavar=("Q", "A", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stdlib_join:
        print(f"stdlib join: {stdlib_join(*args.stdlib_join)} records")
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        start = time.perf_counter()
        paths = generate_inputs(workdir, args.scale, args.seed)
        print(f"inputs in {workdir} ({time.perf_counter() - start:.1f} s to generate or reuse); sizes: "
              + ", ".join(f"{key} {paths[key].stat().st_size / 1e6:.0f} MB"
                          for key in ("questions", "annotations", "captions")))
        out_dir = workdir / "prepared"
        prepare = [sys.executable, "-m", "sit_vqa.apps.prepare", "--questions", str(paths["questions"]),
                   "--annotations", str(paths["annotations"]), "--captions", str(paths["captions"]),
                   "--image-dir", str(paths["image_dir"]), "--out", str(out_dir), "--mode", "sit"]
        stdlib = [sys.executable, __file__, "--stdlib-join",
                  str(paths["questions"]), str(paths["annotations"]), str(paths["captions"])]
        rows = []
        for name, command in (("prepare (sit_vqa)", prepare), ("stdlib json + dict join", stdlib)):
            seconds, peak_mb, output = measure(command)
            rows.append((name, seconds, peak_mb))
            print(output.strip())
        print(f"\n{'contender':<26} {'wall s':>8} {'peak RSS MB':>12}")
        for name, seconds, peak_mb in rows:
            print(f"{name:<26} {seconds:>8.2f} {peak_mb:>12.0f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
