"""What the miniature experiment's runs say, read from their files (no torch): the image-blind references, the
SIT descriptions against the reference captions, each run's own description (is the answer in it, and is it
used), and the paired differences between arms per answer type and per question type.

The caption language is read back by `sit_vqa.samples.reading`; the interval and the verdict come from
`sit_vqa.metrics.paired`. `sit_vqa.apps.miniature` runs the experiment and renders the table.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from sit_vqa.metrics.paired import paired_bootstrap
from sit_vqa.samples.reading import answer_from_description

DESCRIPTIONS_FILE = "descriptions.json"  # the baseline and multitask arms' answers to the describe instruction


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


def own_descriptions(mode: str, predictions: list[dict], eval_dir: str | Path) -> list[str | None]:
    """Per prediction, the description the model itself gave of the image: a SIT model's is part of its answer;
    the other arms were asked the describe instruction once per image (miniature.write_image_descriptions)."""
    if mode == "sit":
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


def question_groups(run: dict) -> dict[str, list[int]]:
    """The question ids of each row of the tables: overall, each answer type, then each question type."""
    ids = sorted(run["question_accuracy"])
    groups = {"overall": ids}
    for key in ("answer_types", "question_types"):
        for question_id in ids:
            groups.setdefault(run[key][question_id], []).append(question_id)
    return groups


def paired_differences(runs: list[dict], other: str, arm: str = "sit", field: str = "question_accuracy") -> dict:
    """`arm` - `other` per question group (`question_groups`), paired by seed and question (only seeds both arms
    ran), from each run's per-question `field` (the held-out phrasings' accuracies for the pool row)."""
    by_arm = {name: {run["seed"]: run for run in runs if run["arm"] == name and run.get(field)}
              for name in (arm, other)}
    seeds = sorted(set(by_arm[arm]) & set(by_arm[other]))
    if not seeds:
        return {}
    figures = {}
    for group, question_ids in question_groups(by_arm[arm][seeds[0]]).items():
        differences = [[by_arm[arm][s][field][q] - by_arm[other][s][field][q] for q in question_ids] for s in seeds]
        figures[group] = paired_bootstrap(differences)
    return figures


def own_description_by_question(predictions: list[dict], descriptions: list[str | None]) -> dict[int, list[bool]]:
    """question id -> [its answer is readable from the model's own description, the model's answer is the one
    the description implies]: is the answer in the description, and is it used."""
    flags = {}
    for prediction, description in zip(predictions, descriptions):
        implied = answer_from_description(prediction["question"], description)
        flags[prediction["question_id"]] = [implied is not None,
                                            implied is not None and _tokens(implied) == _tokens(prediction["answer"] or "")]
    return flags


def add_run_statistics(run: dict) -> None:
    """Per-question accuracies, answer and question types, the own-description split (and SIT's description
    scores); the held-out phrasings' per-question accuracies for the pool row's arms."""
    predictions = sorted(read_predictions(run["eval_dir"]), key=lambda p: p["question_id"])
    descriptions = own_descriptions(run["settings"]["mode"], predictions, run["eval_dir"])
    run["question_accuracy"] = question_accuracies(predictions)
    run["answer_types"] = {p["question_id"]: p["answer_type"] for p in predictions}
    run["question_types"] = {p["question_id"]: p["question_type"] for p in predictions}
    run["own_description"] = readable_split(predictions, descriptions)
    run["own_description_by_question"] = own_description_by_question(predictions, descriptions)
    if run.get("held_out"):
        run["held_out_accuracy"] = question_accuracies(read_predictions(run["held_out"]["eval_dir"]))
