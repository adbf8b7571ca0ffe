"""What every client check shares: the exported records, the expected targets, and the one-line verdict.

Each check_<framework>.py runs in that framework's own venv (no sit_vqa there), reads an export written by
`python -m sit_vqa.apps.prepare --format <fmt>` and its join_report.json, runs the framework's own loader, and
ends with `verdict(...)`: one JSON line (framework, versions, numbers, failures) and exit status 0 only if
nothing failed.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def read_export(export_dir: str | Path, file_name: str) -> list[dict]:
    """The exported records (a JSON list, or JSON Lines for .jsonl)."""
    path = Path(export_dir) / file_name
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def reported_records(export_dir: str | Path) -> int:
    """How many records the join wrote, by its own report (the count each framework must load)."""
    report = json.loads((Path(export_dir) / "join_report.json").read_text())
    return sum(report["records"].values())


def versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def first_differences(got: list[str], want: list[str], limit: int = 3) -> list[str]:
    """The first few records whose decoded labels differ from the target, for the failure message."""
    return [f"record {i}: labels {g!r} != expected {w!r}" for i, (g, w) in enumerate(zip(got, want)) if g != w][:limit]


def verdict(framework: str, packages: tuple[str, ...], numbers: dict, failures: list[str]) -> None:
    """Print the check's one-line JSON result and exit 0 (pass) or 1 (fail)."""
    line = {"framework": framework, "versions": versions(*packages), **numbers,
            "result": "fail" if failures else "pass", "failures": failures}
    print("RESULT " + json.dumps(line, ensure_ascii=False))
    sys.exit(1 if failures else 0)


def supervised_text(tokenizer, input_ids: list[int], labels: list[int]) -> tuple[str, str]:
    """What one record's supervised tokens spell: (in context, alone).

    In context is the decoded text those tokens add to the decoded text before them, so a space that a
    sentencepiece token carries ("▁Description") shows, and nothing a decoder strips at a string's start is
    hidden; alone is tokenizer.decode of the kept ids. Raises if the kept tokens are not one contiguous span
    equal to the input ids there (a label on a prompt token, or a shifted label, would be a defect)."""
    kept = [i for i, label in enumerate(labels) if label != -100]
    if not kept:
        raise AssertionError("no supervised token")
    start, end = kept[0], kept[-1] + 1
    if len(kept) != end - start or list(labels[start:end]) != list(input_ids[start:end]):
        raise AssertionError(f"supervised tokens {start}..{end} are not one span equal to the input ids")

    def decode(ids):
        return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    before, through = decode(input_ids[:start]), decode(input_ids[:end])
    if not through.startswith(before):
        raise AssertionError(f"decoding is not prefix-stable here: {before[-40:]!r} vs {through[-80:]!r}")
    return through[len(before):], decode(input_ids[start:end])
