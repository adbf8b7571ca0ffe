"""Every module path (`sit_vqa.x.y`, `sit_vqa.x.y.name`) and `file.py` name cited in the package's docstrings and
comments, the entry points, the benchmarks, README.md and docs/ exists: docs that name a moved or removed file are
caught here. Files of other projects cited on purpose (the official scorers, LAVIS, LLaVA) are listed below."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").glob("*.md")),
           *sorted((REPO / "sit_vqa").rglob("*.py")), REPO / "train.py", REPO / "evaluate.py",
           *sorted((REPO / "bench").glob("*.py"))]
# other projects' files, named where their behaviour is matched or their data read
EXTERNAL = {
    "vqaEval.py", "PythonEvaluationTools/vqaEvaluation/vqaEval.py",  # GT-Vision-Lab/VQA, the official scorer
    "PythonHelperTools/vqaTools/vqa.py",  # and its reader
    "vqa_eval.py", "lavis/common/vqa_tools/vqa_eval.py",  # LAVIS's copy of it
    "eval.py", "gqa-eval.py",  # GQA's official scorer
    "make_instruct_data.py", "LAVIS/make_instruct_data.py",  # the SIT paper's data script
    "llava/train/train_mem.py", "llava/train/train.py",  # LLaVA's training entry point and its data code
    "modeling_instructblip.py",  # transformers' InstructBLIP
}
DATA_FILES = {"sit_vqa.json", "sit_vqa.jsonl"}  # export file names that look like module paths
MODULE_PATH = re.compile(r"\bsit_vqa(?:\.\w+)+")
FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.py)\b")
PY_FILES = {path.name for path in REPO.rglob("*.py") if ".venv" not in path.parts}


def module_file(parts: list[str]) -> Path | None:
    for candidate in (REPO.joinpath(*parts).with_suffix(".py"), REPO.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def defines(source: str, name: str) -> bool:
    """A def, class or assignment of `name` at any indentation (a method or a class attribute counts too)."""
    return re.search(rf"^\s*(?:(?:async\s+)?def|class)\s+{name}\b|^\s*{name}\s*(?::[^=\n]*)?=", source, re.M) is not None


def missing_module_path(cited: str) -> bool:
    parts = cited.split(".")
    for end in range(len(parts), 1, -1):  # the longest prefix that is a module; the rest must be defined in it
        module = module_file(parts[:end])
        if module is not None:
            return end < len(parts) and not defines(module.read_text(encoding="utf-8"), parts[end])
    return True


def missing_file(cited: str) -> bool:
    if cited in EXTERNAL:
        return False
    return not (REPO / cited).is_file() if "/" in cited else cited not in PY_FILES


def dangling(text: str) -> list[str]:
    """The module paths and file names `text` cites that do not exist, in order."""
    cited = [(m.start(), m.group(0)) for m in MODULE_PATH.finditer(text)
             if m.group(0) not in DATA_FILES and missing_module_path(m.group(0))]
    cited += [(m.start(), m.group(1)) for m in FILE_NAME.finditer(text) if missing_file(m.group(1))]
    return [name for _, name in sorted(cited)]


def test_every_cited_module_and_file_exists():
    assert len(SOURCES) > 80
    found = {f"{source.relative_to(REPO)}: {name}" for source in SOURCES
             for name in dangling(source.read_text(encoding="utf-8"))}
    assert sorted(found) == []


def test_the_check_sees_a_moved_module_a_missing_name_and_a_missing_file():
    text = ("`sit_vqa.evaluation.vqa.generate_texts`, sit_vqa.modeling.transforms, templates.py, "
            "sit_vqa.modeling.generation.generate_texts, collate.py, sit_vqa.evaluation.registry.SETS, "
            "sit_vqa.modeling.checkpoint_manifest.CheckpointManifest.at_save, bench/train_throughput.py\n")
    assert dangling(text) == ["sit_vqa.evaluation.vqa.generate_texts", "sit_vqa.modeling.transforms", "templates.py"]
