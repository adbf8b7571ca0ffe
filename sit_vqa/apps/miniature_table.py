"""The miniature experiment's results (`sit_vqa.apps.miniature`'s results.json) as markdown tables, and the
judgement every reader needs first: which runs did not learn to look at the image."""

from __future__ import annotations

from sit_vqa.metrics.paired import ONE_SEED, verdict

COLUMNS = ("overall", "yes/no", "number", "other")
OWN_DESCRIPTION_COLUMNS = {
    "readable_share": "answer readable from own description (%)",
    "accuracy_readable": "accuracy there",
    "accuracy_rest": "accuracy elsewhere",
}


def best_image_blind(references: dict[str, dict]) -> float:
    return max(reference["overall"] for reference in references.values())


def learning_failures(results: dict) -> list[str]:
    """Runs that did not learn to look: overall accuracy below the best image-blind reference of their world
    (question prior or question-type majority, whichever is higher) + results["margin_over_prior"]."""
    margin, failures = results["margin_over_prior"], []
    for world in results["worlds"]:
        blind = best_image_blind(world["references"])
        for run in world["runs"]:
            if run["overall"] < blind + margin:
                failures.append(f"{run['name']}: {run['overall']:.2f} < image-blind {blind:.2f} + {margin}")
    return failures


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


def _share(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.0f}" if flags else "n/a"


def _arm_rows(world: dict, arms: list[str], margin: float) -> list[str]:
    blind = best_image_blind(world["references"])
    lines = ["| Arm | " + " | ".join(COLUMNS + tuple(OWN_DESCRIPTION_COLUMNS.values())) + " | runs that look |",
             "|---|" + "---:|" * (len(COLUMNS) + len(OWN_DESCRIPTION_COLUMNS)) + "---|"]
    blank = " |" * (len(OWN_DESCRIPTION_COLUMNS) + 1)
    for name, reference in world["references"].items():
        lines.append(f"| {name} (image-blind) | " + " | ".join(f"{_value(reference, c):.1f}" for c in COLUMNS) + " |"
                     + blank)
    for arm in arms:
        rows = [run for run in world["runs"] if run["arm"] == arm]
        if not rows:
            continue
        own = [_spread_known([r["own_description"][k] for r in rows]) for k in OWN_DESCRIPTION_COLUMNS]
        looking = sum(r["overall"] >= blind + margin for r in rows)
        flag = f"{looking} of {len(rows)}" + ("" if looking == len(rows) else f" **FLAG: below image-blind + {margin:g}**")
        lines.append(f"| {arm} | " + " | ".join([_spread([_value(r, c) for r in rows]) for c in COLUMNS] + own)
                     + f" | {flag} |")
    return lines


def _difference_rows(world: dict, groups: list[str], first_column: str) -> list[str]:
    lines = [f"| {first_column} | questions | " + " | ".join(f"SIT - {other}" for other in world["differences"])
             + " | " + " | ".join(f"verdict vs {other}" for other in world["differences"]) + " |",
             "|---|---:|" + "---:|" * len(world["differences"]) + "---|" * len(world["differences"])]
    for group in groups:
        figures = [world["differences"][other].get(group) for other in world["differences"]]
        if not any(figures):
            continue
        count = next(f["questions"] for f in figures if f)
        lines.append(f"| {group} | {count} | " + " | ".join(_interval(f) for f in figures) + " | "
                     + " | ".join(verdict(f) if f else "n/a" for f in figures) + " |")
    return lines


def _own_description_rows(world: dict, arms: list[str], question_types: list[str]) -> list[str]:
    """Per question type and arm: is the answer in the model's own description, and is it used."""
    lines = ["| Question type | " + " | ".join(f"{arm}: in description / used (%)" for arm in arms) + " |",
             "|---|" + "---:|" * len(arms)]
    for question_type in question_types:
        cells = []
        for arm in arms:
            flags = [run["own_description_by_question"][q] for run in world["runs"] if run["arm"] == arm
                     for q, kind in run["question_types"].items() if kind == question_type]
            readable = [f for f in flags if f[0]]
            cells.append(f"{_share([f[0] for f in flags])} / {_share([f[1] for f in readable])}")
        lines.append(f"| {question_type} | " + " | ".join(cells) + " |")
    return lines


def _pool_rows(world: dict) -> list[str]:
    pool = world.get("pool")
    if not pool:
        return []
    runs = {arm: [r["held_out"]["overall"] for r in world["runs"] if r["arm"] == arm and r.get("held_out")]
            for arm in ("sit", "sit_pool")}
    figure = pool.get("overall")
    return ["", "Instruction pool (both asked with the pool's held-out phrasings, never trained on):", "",
            "| Trained on | overall, held-out phrasings |", "|---|---:|",
            f"| one phrasing (sit) | {_spread_known(runs['sit'])} |",
            f"| the pool (sit_pool) | {_spread_known(runs['sit_pool'])} |",
            f"| pool - one phrasing | {_interval(figure)} ({verdict(figure).replace('SIT', 'pool') if figure else 'n/a'}) |"]


def world_table(world: dict, arms: list[str], margin: float) -> list[str]:
    runs = world["runs"]
    seeds = sorted({run["seed"] for run in runs})
    question_types = sorted({kind for run in runs for kind in run["question_types"].values()})
    one_seed = len(seeds) < 2
    lines = [f"### World `{world['world']}`: {world['description']}", "",
             f"VQA accuracy on {world['num_val_questions']} val questions (official VQAv2 metric), "
             f"seed(s) {', '.join(map(str, seeds))}: mean (min-max). A run looks at the image when it clears the "
             f"best image-blind reference by {margin:g} points.", "",
             *_arm_rows(world, [a for a in arms if a != "sit_pool"], margin), ""]
    interval_kind = ("over questions only -- " + ONE_SEED) if one_seed else "over seeds and questions"
    lines += [f"Paired differences (points; mean over seeds and questions, [95% bootstrap interval {interval_kind}]):",
              "", *_difference_rows(world, list(COLUMNS), "Answer type"), "",
              *_difference_rows(world, question_types, "Question type"), "",
              "Own descriptions per question type: the share of questions whose answer the model's own description "
              "states, and among those the share answered as the description implies:", "",
              *_own_description_rows(world, [a for a in arms if a != "sit_pool"], question_types)]
    lines += _pool_rows(world)
    sit = [run["description"] for run in runs if run["arm"] == "sit"]
    if sit:
        lines += ["", "SIT outputs: " + "; ".join(
            f"{label} {_spread_known([d[key] for d in sit])}"
            for key, label in (("description_token_f1", "description token F1 with the best reference caption"),
                               ("description_exact_match", "identical to a reference caption (%)"),
                               ("answer_agrees_with_description", "answer agrees with its own description (%)"))
        ) + "."]
    return lines + [""]


def _code(code: dict | None) -> str:
    if not code:
        return "not recorded"
    if not code["commit"]:
        return f"sit-vqa {code['version']} (not a git checkout)"
    return f"sit-vqa {code['version']} at {code['commit'][:10]}" + (" with local changes" if code["modified"] else "")


def table_markdown(results: dict) -> str:
    lines = []
    for world in results["worlds"]:
        lines += world_table(world, results["arms"], results["margin_over_prior"])
    failures = learning_failures(results)
    if failures:
        lines += [f"**Runs that did not learn to look** (below the best image-blind reference + "
                  f"{results['margin_over_prior']:g}): " + "; ".join(failures) + ".", ""]
    lines.append(f"Budget: {results['budget']}; settings changed from the defaults: {results['extra_settings'] or 'none'}; "
                 f"run time {results['run_seconds'] / 60:.1f} min summed over the runs; this invocation: wall time "
                 f"{results['wall_seconds'] / 60:.1f} min, {results.get('runs_reused', 'n/a')} runs reused from "
                 "earlier ones "
                 f"({results['workers']} runs at a time, one thread each); "
                 f"code: {_code(results.get('code'))}.")
    return "\n".join(lines) + "\n"
