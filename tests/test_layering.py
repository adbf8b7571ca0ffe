"""Imports run one way (README.md, "Layout"): errors/files <- data, metrics, samples <- modeling <- config <- training,
evaluation <- apps. Checked on the source (every import statement of every module, also those inside functions
and under TYPE_CHECKING) and in real interpreters (what an import actually loads, and what imports without torch)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sit_vqa"

# sit_vqa.<part> -> its layer; a module may import its own layer and those below, never one above
LAYERS = {
    "errors": 0, "files": 0, "run_layout": 0, "__init__": 0,
    "data": 1, "metrics": 1, "samples": 1,
    "modeling": 2,
    "config": 3,
    "training": 4, "evaluation": 4,
    "apps": 5,
    "integrations": 6,  # other frameworks' plugins (lmms-eval): they load models as the demo does
}


def module_files() -> dict[str, Path]:
    """sit_vqa's modules by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = module_files()


def imported_modules(name: str, path: Path) -> set[str]:
    """The sit_vqa modules a module's import statements name (`from pkg import mod` names pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # sit_vqa.x.y.attr -> sit_vqa.x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def test_every_part_of_the_package_has_a_layer():
    assert {name.split(".")[1] for name in MODULES if "." in name} <= set(LAYERS)


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                    if layer(target) > layer(module))
    assert upward == []


def test_the_layer_rule_sees_an_upward_import(tmp_path):
    """The check above is not vacuous: the import that the issue named (model -> config) is one it reports."""
    source = tmp_path / "loading.py"
    source.write_text("from sit_vqa.config import ModelArguments\n")
    assert imported_modules("sit_vqa.modeling.loading", source) == {"sit_vqa.config"}
    assert layer("sit_vqa.config") > layer("sit_vqa.modeling.loading")


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, loops, counter = {}, {}, set(), [], [], [0]

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = counter[0]
                    counter[0] += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        loops.append(sorted(members))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(loops)


def test_the_loop_finder_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_loops(graph) == [["a", "b", "c"]]
    assert import_loops({"a": {"b"}, "b": set()}) == []


def test_no_import_loop():
    assert import_loops(GRAPH) == []


def loaded_by(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


ABOVE_MODEL_CODE = {"sit_vqa.config", "sit_vqa.data.join", "sit_vqa.samples.generated", "pycocotools"}
NOT_LOADED = {
    "sit_vqa.modeling.loading": ABOVE_MODEL_CODE,
    "sit_vqa.modeling.checkpoint": ABOVE_MODEL_CODE,
    "sit_vqa.modeling.collate": ABOVE_MODEL_CODE | {"sit_vqa.modeling.loading", "peft"},  # padding needs no loader
}


@pytest.mark.parametrize("module", NOT_LOADED)
def test_model_code_loads_neither_the_config_nor_the_join(module):
    loaded = loaded_by(f"import {module}")
    assert module in loaded
    assert loaded & NOT_LOADED[module] == set()


# Hides torch from every import finder (find_spec says it is not there, as in an environment without it),
# then imports each module of sit_vqa.data and sit_vqa.metrics and prints those that failed.
WITHOUT_TORCH = """
import importlib, json, sys
class WithoutTorch:
    def __init__(self, finder):
        self.finder = finder
    def __getattr__(self, name):
        return getattr(self.finder, name)
    def find_spec(self, name, path=None, target=None):
        return None if name.partition(".")[0] == "torch" else self.finder.find_spec(name, path, target)
sys.meta_path[:] = [WithoutTorch(finder) for finder in sys.meta_path]
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}"
try:
    import torch
    failed["(the blocker)"] = "torch imported"
except ModuleNotFoundError:
    pass
print(json.dumps(failed))
"""


def run_without_torch(modules: list[str]) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, json.dumps(modules)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_data_and_metrics_import_without_torch():
    modules = [name for name in MODULES if name.split(".")[1:2] in (["data"], ["metrics"])]
    assert len(modules) > 10
    assert run_without_torch(modules) == {}


def test_the_torch_blocker_blocks():
    assert set(run_without_torch(["sit_vqa.modeling.precision", "sit_vqa.data.vqav2"])) == {"sit_vqa.modeling.precision"}
