"""Benchmark (not a test): score files the size of VQAv2 val (214,354 questions x 10 answers) with our evaluator,
and with the official one when given, from the command line, loading included.

    python bench/bench_vqa_metric.py                                   # ours alone
    python bench/bench_vqa_metric.py --official /path/to/VQA           # also the official script, and compare
    python bench/bench_vqa_metric.py --official DIR --official-python python2.7 --legacy --workdir /tmp/vqa_bench

--official takes a checkout of GT-Vision-Lab/VQA (PythonHelperTools/vqaTools/vqa.py and
PythonEvaluationTools/vqaEvaluation/vqaEval.py) or a folder holding vqa.py and vqaEval.py (e.g. LAVIS's
vqa_eval.py renamed, for --legacy). The official code is run as it is, in its own process, with the interpreter
of --official-python; the bench then checks that it reported the same overall, per-answer-type,
per-question-type and per-question numbers as ours.

The files are generated deterministically (seeded) with VQAv2's shape: answer types yes/no 38%, number 13%,
other 49%, real question types, high annotator agreement on yes/no, a long tail of rare "other" answers, and the
variants real answers have (capitals, trailing periods, articles, number words, "1,000", "3.5", "10:30",
hyphens and slashes, contractions, stray spaces, tabs and newlines). Results answer right about half the time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VAL_QUESTIONS = 214_354
REPO = Path(__file__).resolve().parent.parent

QUESTION_TYPES = {
    "yes/no": ["is the", "is this", "are the", "does the", "is there a", "is it", "are there", "is this a",
               "is the man", "is there", "are these", "do you", "is the woman", "can you", "is that a", "has"],
    "number": ["how many", "how many people are", "how many people are in", "what number is", "what time"],
    "other": ["what is the", "what color is the", "what", "what is", "what kind of", "what type of",
              "where is the", "what is the man", "which", "who is", "why", "what color are the", "none of the above",
              "what are the", "how", "what does the", "what sport is", "what room is", "what is on the",
              "what is the person", "what brand", "what animal is", "where are the", "what is in the"],
}
COMMON_OTHER = [
    "white", "red", "blue", "black", "green", "brown", "yellow", "gray", "orange", "pink", "tennis", "baseball",
    "frisbee", "skateboarding", "surfing", "skiing", "dog", "cat", "giraffe", "elephant", "pizza", "kitchen",
    "bathroom", "living room", "t-shirt", "hot dog", "black and white", "red and white", "umbrella", "table",
    "grass", "water", "snow", "street", "sitting", "standing", "eating", "playing", "left", "right", "wood",
    "metal", "plastic", "nike", "stop", "bus", "train", "airplane", "horse", "cow", "sheep", "bird", "man",
    "woman", "girl", "boy", "phone", "laptop", "banana", "apple", "sandwich", "cake", "donut", "broccoli",
    "night", "day", "summer", "winter", "sunny", "cloudy", "beach", "park", "field", "city", "kite", "bench",
]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
SYLLABLES = ["ka", "lo", "mi", "pe", "ru", "sa", "to", "ne", "vi", "da", "ze", "bo", "qui", "fla", "gre", "stri"]


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def variant(rng: random.Random, answer: str) -> str:
    """How annotators and models write the same answer differently."""
    r = rng.random()
    if r < 0.25:
        return answer.capitalize()
    if r < 0.4:
        return answer + rng.choice([".", "!", "?"])
    if r < 0.55:
        return rng.choice(["the ", "a ", "an "]) + answer
    if r < 0.65:
        return rng.choice([" ", "", "\n", "\t"]) + answer + rng.choice([" ", "", "\n"])
    if r < 0.75:
        return answer.replace(" ", rng.choice(["-", "/", " / ", "  "]))
    if r < 0.85:
        return rng.choice(["dont know", "cant tell", "its " + answer, "it's " + answer, answer + "'s"])
    return answer.upper()


def number_answer(rng: random.Random) -> str:
    n = min(int(rng.expovariate(0.45)), 40)
    r = rng.random()
    if r < 0.12 and n <= 10:
        return NUMBER_WORDS[n]
    if r < 0.16:
        return rng.choice(["1,000", "2,500", "10:30", "3.5", "1.5", "12:00", "none", "100", "2.", "1 000"])
    return str(n)


def other_answer(rng: random.Random, vocabulary: list[str]) -> str:
    if rng.random() < 0.12:  # the long tail: answers no one else gave
        return " ".join(pseudo_word(rng) for _ in range(rng.randint(1, 3)))
    return vocabulary[min(int(rng.paretovariate(1.1)) - 1, len(vocabulary) - 1)]


def make_question(rng: random.Random, qid: int, vocabulary: list[str]):
    answer_type = rng.choices(["yes/no", "number", "other"], weights=[38, 13, 49])[0]
    if answer_type == "yes/no":
        base, agreement = rng.choice(["yes", "no"]), 0.9

        def draw():
            return {"yes": "no", "no": "yes"}[base]
    elif answer_type == "number":
        base, agreement = number_answer(rng), 0.65

        def draw():
            return number_answer(rng)
    else:
        base, agreement = other_answer(rng, vocabulary), 0.55

        def draw():
            return other_answer(rng, vocabulary)
    answers = []
    for answer_id in range(1, 11):
        answer = base if rng.random() < agreement else draw()
        answers.append({"answer": variant(rng, answer) if rng.random() < 0.06 else answer,
                        "answer_confidence": rng.choice(["yes", "yes", "yes", "maybe", "no"]), "answer_id": answer_id})
    r = rng.random()
    prediction = base if r < 0.5 else variant(rng, base) if r < 0.6 else draw()
    annotation = {"question_type": rng.choice(QUESTION_TYPES[answer_type]), "multiple_choice_answer": base,
                  "answers": answers, "image_id": qid // 1000, "answer_type": answer_type, "question_id": qid}
    question = {"image_id": qid // 1000, "question": "What is it?", "question_id": qid}
    return question, annotation, {"question_id": qid, "answer": prediction}


def generate(directory: Path, n_questions: int, seed: int) -> dict[str, Path]:
    paths = {name: directory / f"{name}.json" for name in ("questions", "annotations", "results")}
    marker = directory / f"generated_{n_questions}_{seed}"
    if marker.exists():
        print(f"Reusing the files in {directory}")
        return paths
    rng = random.Random(seed)
    vocabulary = COMMON_OTHER + [pseudo_word(rng) for _ in range(3000)]
    questions, annotations, results = [], [], []
    for index in range(n_questions):
        question, annotation, result = make_question(rng, (index // 3 + 1) * 1000 + index % 3, vocabulary)
        questions.append(question)
        annotations.append(annotation)
        results.append(result)
    rng.shuffle(results)
    meta = {"info": {"description": "synthetic, VQAv2 val shape"}, "license": {"name": "none"},
            "data_subtype": "val2014", "data_type": "mscoco", "task_type": "Open-Ended"}
    for name, content in (("questions", {**meta, "questions": questions}),
                          ("annotations", {**meta, "annotations": annotations}), ("results", results)):
        with open(paths[name], "w") as f:
            json.dump(content, f)  # Python's default separators, like the official files
    marker.touch()
    return paths


OFFICIAL_DRIVER = r"""
import json, os, sys, time
start = time.time()
helper_dir, eval_dir, questions, annotations, results, out = sys.argv[1:]
sys.path[:0] = [helper_dir, eval_dir]
from vqa import VQA
from vqaEval import VQAEval
saved, sys.stdout = sys.stdout, open(os.devnull, "w")  # its progress bar
vqa = VQA(annotations, questions)
result = vqa.loadRes(results, questions)
evaluator = VQAEval(vqa, result, n=2)
evaluator.evaluate()
sys.stdout = saved
elapsed = time.time() - start
report = dict(evaluator.accuracy)
report["perQuestion"] = dict((str(k), v) for k, v in evaluator.evalQA.items())
json.dump(report, open(out, "w"))
print("official in-process seconds: %.2f" % elapsed)
"""

OURS_DRIVER = r"""
import sys, time
start = time.perf_counter()
from sit_vqa.metrics.vqa import score_files
report = score_files(*sys.argv[1:4], legacy=sys.argv[4] == "legacy")
print("ours in-process seconds: %.2f" % (time.perf_counter() - start))
"""


def official_dirs(path: Path) -> tuple[Path, Path]:
    if (path / "PythonHelperTools").is_dir():
        return path / "PythonHelperTools" / "vqaTools", path / "PythonEvaluationTools" / "vqaEvaluation"
    return path, path


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def compare(ours: dict, official: dict) -> list[str]:
    problems = []
    for key in ("overall", "perAnswerType", "perQuestionType"):
        if ours[key] != official[key]:
            problems.append(f"{key}: ours {ours[key]} official {official[key]}")
    ours_per_question = {str(k): v for k, v in ours["perQuestion"].items()}
    differing = [k for k in official["perQuestion"] if ours_per_question.get(k) != official["perQuestion"][k]]
    if differing or len(ours_per_question) != len(official["perQuestion"]):
        problems.append(f"perQuestion: {len(differing)} of {len(official['perQuestion'])} differ, e.g. {differing[:5]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=VAL_QUESTIONS, help="number of questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep (and reuse) the generated files here; default: a temp dir")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our scorer")
    parser.add_argument("--legacy", action="store_true", help="compare the legacy (LAVIS) evaluator")
    parser.add_argument("--official", type=Path, help="GT-Vision-Lab/VQA checkout, or a dir with vqa.py, vqaEval.py")
    parser.add_argument("--official-python", default=sys.executable, help="interpreter for the official code")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.workdir or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        paths = generate(directory, args.questions, args.seed)
        sizes = ", ".join(f"{name} {path.stat().st_size / 1e6:.0f} MB" for name, path in paths.items())
        print(f"{args.questions} questions ({sizes}), ready in {time.perf_counter() - start:.1f} s")
        files = [str(paths[name]) for name in ("questions", "annotations", "results")]
        mode = "legacy" if args.legacy else "2021"
        report = directory / "ours.json"

        cli = [sys.executable, "-m", "sit_vqa.metrics.vqa", "--questions", files[0], "--annotations", files[1],
               "--results", files[2], "--out", str(report)] + (["--legacy"] if args.legacy else [])
        cli_seconds, in_process = [], []
        for _ in range(args.repeats):
            seconds, _ = timed(cli)
            cli_seconds.append(seconds)
            _, stdout = timed([sys.executable, "-c", OURS_DRIVER, *files, mode])
            in_process.append(float(stdout.split()[-1]))
        print(f"ours ({mode}), CLI wall seconds incl. interpreter start and writing the report: "
              f"{', '.join(f'{s:.2f}' for s in cli_seconds)} (median {statistics.median(cli_seconds):.2f})")
        print(f"ours ({mode}), score_files incl. import and loading: "
              f"{', '.join(f'{s:.2f}' for s in in_process)} (median {statistics.median(in_process):.2f})")

        if args.official is None:
            print("official: not run (give --official PATH to time and compare it)")
            return
        helper_dir, eval_dir = official_dirs(args.official)
        official_out = directory / "official.json"
        seconds, stdout = timed([args.official_python, "-c", OFFICIAL_DRIVER, str(helper_dir), str(eval_dir),
                                 *files, str(official_out)])
        print(f"official ({args.official_python}), wall seconds: {seconds:.2f}; {stdout.strip()}")
        print(f"speed-up (wall, median of ours): {seconds / statistics.median(cli_seconds):.1f}x")
        problems = compare(json.loads(report.read_text()), json.loads(official_out.read_text()))
        print("same numbers as the official script: " + ("yes, every field" if not problems else "NO"))
        for problem in problems:
            print("  " + problem)


if __name__ == "__main__":
    main()
