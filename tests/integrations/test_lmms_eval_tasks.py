"""What can be checked of the lmms-eval tasks and model without installing lmms-eval (bench/clients/lmms_eval_check.py
runs lmms-eval itself): the task YAMLs parse (with lmms-eval's `!function` tags), name our prompt and our functions,
their regex filter reads the answer evaluate.py's parser reads, their documents are evaluate.py's questions, and the
model is registered in pyproject.toml as lmms-eval looks for it."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sit_vqa.data.prompts import ANSWER_PATTERN, Templates, parse_sit_output
from sit_vqa.errors import DataError
from sit_vqa.integrations.lmms_eval import TASKS_DIR
from sit_vqa.integrations.lmms_eval import task_docs

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
VQAV2_ENV = {
    "SIT_VQA_VQAV2_QUESTIONS": DATA / "sample" / "v2_OpenEnded_mscoco_val2014_questions.json",
    "SIT_VQA_VQAV2_ANNOTATIONS": DATA / "sample" / "v2_mscoco_val2014_annotations.json",
    "SIT_VQA_VQAV2_CAPTIONS": DATA / "sample" / "captions_val2014.json",
    "SIT_VQA_VQAV2_IMAGE_DIR": DATA / "sample" / "val2014",
}
GQA_ENV = {"SIT_VQA_GQA_QUESTIONS": DATA / "gqa_sample" / "testdev_balanced_questions.json",
           "SIT_VQA_GQA_IMAGE_DIR": DATA / "gqa_sample" / "images"}
TASK_FILES = {"sit_vqav2": "sit_vqav2.yaml", "sit_gqa": "sit_gqa.yaml"}


class Function(str):
    """The name in a `!function` tag."""


class TaskLoader(yaml.SafeLoader):
    """A YAML loader that keeps lmms-eval's `!function` tags as names (lmms-eval imports them)."""


TaskLoader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))


def load_task(name: str) -> dict:
    """A task file with its `include` merged in, as lmms-eval's load_yaml_config merges it (the file's keys win)."""
    config = yaml.load((TASKS_DIR / name).read_text(encoding="utf-8"), Loader=TaskLoader)
    included = config.pop("include", None)
    return {**load_task(included), **config} if included else config


def resolve(function: Function):
    module, _, name = function.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(params=sorted(TASK_FILES))
def task(request) -> dict:
    return load_task(TASK_FILES[request.param])


def test_the_task_files_name_their_task_and_functions_that_exist(task):
    assert task["task"] in TASK_FILES and TASK_FILES[task["task"]].startswith(task["task"])
    functions = {key: value for key, value in task.items() if isinstance(value, Function)}
    assert set(functions) == {"doc_to_visual", "doc_to_text", "process_docs", "process_results"}
    for function in functions.values():
        assert function.startswith("sit_vqa.integrations.lmms_eval.task_docs.")
        assert callable(resolve(function))
    stub = TASKS_DIR / task["dataset_kwargs"]["data_files"][task["test_split"]]
    assert task["dataset_path"] == "json" and stub.is_file() and len(stub.read_text().splitlines()) == 1


def test_the_tasks_ask_with_the_packages_sit_instruction(task):
    ask = resolve(task["doc_to_text"])
    assert ask is task_docs.sit_instruction
    question = "What color is the bus?"
    assert ask({"question": question}) == Templates().render("sit", question=question)[0]
    assert ask({"question": question}).startswith("First describe the image, then answer")


def test_generation_leaves_room_for_a_description(task):
    from sit_vqa.config import SitTrainingArguments

    # evaluate.py's default budget holds "Description: <caption>\nAnswer: <answer>"; the task's is not smaller
    assert task["generation_kwargs"]["max_new_tokens"] >= SitTrainingArguments.generation_max_new_tokens
    assert task["generation_kwargs"]["do_sample"] is False and task["output_type"] == "generate_until"
    assert task["reasoning_tags"] == "none"  # lmms-eval would strip <think> blocks from answers; evaluate.py does not


def regex_filter(task: dict, text: str) -> str:
    """lmms-eval 0.7.3's filter pipeline of the task, step for step (lmms_eval/filters/extraction.py RegexFilter,
    selection.py TakeFirstFilter), on one response."""
    (pipeline,) = task["filter_list"]
    regex, take_first = pipeline["filter"]
    assert (regex["function"], take_first) == ("regex", {"function": "take_first"})
    responses = [text]
    filtered = []
    for response in responses:
        match = re.compile(regex["regex_pattern"]).findall(response)
        if match:
            match = match[regex.get("group_select", 0)]
            if isinstance(match, tuple):
                match = [m for m in match if m][0]
            match = match.strip()
        else:
            match = regex.get("fallback", "[invalid]")
        filtered.append(match)
    return filtered[0]


def model_style_outputs() -> list[str]:
    """Outputs as SIT and baseline models write them, from the bundled sample's real captions and answers, and
    the ways they go wrong: run-on questions, one-line outputs, other case, no marker, markers in the text."""
    captions = [c["caption"] for c in json.loads((DATA / "sample" / "captions_val2014.json").read_text())["annotations"]]
    annotations = json.loads((DATA / "sample" / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    answers = [a["multiple_choice_answer"] for a in annotations]
    outputs = []
    for caption, answer in zip(captions[:40], answers[:40]):
        target = Templates().render("sit", caption=caption, answer=answer)[1]
        outputs += [
            target, target.upper(), " " + target + "\n",
            target + "\nQuestion: what else is there?\nAnswer: a dog",  # runs on: the first answer is the one asked
            target + "\n\nAnswer: no",
            target.replace("\n", " "),  # one line: the last "Answer:"
            answer, answer + "\nQuestion: is it red?",  # a baseline model
            f"Description: {caption}\n{answer}",  # no answer marker
            f"Description: a sign that reads Answer: none\nAnswer: {answer}",
            f"description :{caption}\nanswer :{answer}", f"Answer: {answer}\nDescription: {caption}",
            f"Description: {caption}\nAnswer:", f"Description: {caption}\nAnswer:\n{answer}", "",
        ]
    return outputs


def test_the_regex_filter_reads_the_answer_evaluate_py_scores(task):
    assert task["filter_list"][0]["filter"][0]["regex_pattern"] == ANSWER_PATTERN  # the one rule, one string
    outputs = model_style_outputs()
    assert len(outputs) > 500
    for text in outputs:
        assert regex_filter(task, text) == parse_sit_output(text).answer, text
    run_on = "Description: a red bus.\nAnswer: yes\nQuestion: How many buses?\nAnswer: 2"
    assert regex_filter(task, run_on) == "yes"


def test_a_filter_that_took_the_last_line_start_answer_would_differ():
    """The check above can fail: the rule the issue first asked for (the last line-start "Answer:") reads a run-on
    output's made-up second answer."""
    last = {"filter_list": [{"name": "x", "filter": [
        {"function": "regex", "regex_pattern": r"(?im)^[ \t]*answer\s*:\s*([^\n]*)", "group_select": -1},
        {"function": "take_first"}]}]}
    text = "Description: a red bus.\nAnswer: yes\nQuestion: How many buses?\nAnswer: 2"
    assert regex_filter(last, text) == "2" != parse_sit_output(text).answer


def test_vqav2_documents_are_evaluate_py_questions(monkeypatch):
    from sit_vqa.evaluation.vqa import join_eval_files, one_row_per_question

    for name, path in VQAV2_ENV.items():
        monkeypatch.setenv(name, str(path))
    docs = task_docs.vqav2_docs(None)
    questions = json.loads(VQAV2_ENV["SIT_VQA_VQAV2_QUESTIONS"].read_text())["questions"]
    assert docs["question_id"] == [q["question_id"] for q in questions]  # every question, in file order
    assert docs["question"] == [q["question"] for q in questions]
    assert all(Path(path).is_file() for path in docs["image_path"])
    table, _ = join_eval_files({key: str(VQAV2_ENV[name]) for key, name in task_docs.VQAV2_FILES.items()})
    assert docs["answers"] == table.take(one_row_per_question(table))["answers"].to_pylist()
    doc = docs[0]
    assert task_docs.vqav2_accuracy(doc, [doc["answers"][0]])["vqa_accuracy"] > 0
    assert task_docs.vqav2_accuracy(doc, ["no such answer"]) == {"vqa_accuracy": 0.0}
    (image,) = task_docs.doc_to_visual(doc)
    assert image.mode == "RGB"


def test_gqa_documents_are_the_balanced_questions(monkeypatch):
    for name, path in GQA_ENV.items():
        monkeypatch.setenv(name, str(path))
    docs = task_docs.gqa_docs(None)
    questions = json.loads(GQA_ENV["SIT_VQA_GQA_QUESTIONS"].read_text())
    assert docs["question_id"] == [qid for qid, q in questions.items() if q.get("isBalanced", True)]
    doc = docs[0]
    assert task_docs.gqa_accuracy(doc, [doc["answer"]]) == {"gqa_accuracy": 100.0}
    assert task_docs.gqa_accuracy(doc, [doc["answer"].upper() + "."]) == {"gqa_accuracy": 0.0}  # exact, as eval.py


def test_an_unset_file_variable_is_named(monkeypatch):
    for name, path in VQAV2_ENV.items():
        monkeypatch.setenv(name, str(path))
    monkeypatch.delenv("SIT_VQA_VQAV2_CAPTIONS")
    with pytest.raises(DataError, match="SIT_VQA_VQAV2_CAPTIONS is not set.*SIT_VQA_VQAV2_QUESTIONS=..."):
        task_docs.vqav2_docs(None)


def test_the_model_is_registered_where_lmms_eval_looks():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["lmms_eval.models"]["sit_vqa"]
    assert target == "sit_vqa.integrations.lmms_eval.model:MANIFEST"
    module_path = REPO / "sit_vqa" / "integrations" / "lmms_eval" / "model.py"
    tree = ast.parse(module_path.read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    (manifest,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                   and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["MANIFEST"]]
    assert isinstance(manifest, ast.Call) and manifest.func.id == "ModelManifest"
    fields = {keyword.arg: ast.literal_eval(keyword.value) for keyword in manifest.keywords}
    assert fields["model_id"] == "sit_vqa"
    module, _, name = fields["simple_class_path"].rpartition(".")
    assert module == "sit_vqa.integrations.lmms_eval.model" and name in classes
    # the task files travel with the package (a wheel holds only the data files pyproject declares)
    declared = project["tool"]["setuptools"]["package-data"]["sit_vqa.integrations.lmms_eval"]
    shipped = {path for pattern in declared for path in TASKS_DIR.parent.glob(pattern)}
    assert shipped == {path for path in TASKS_DIR.iterdir() if path.is_file()}


def test_only_the_model_module_imports_lmms_eval():
    importers = set()
    for path in (REPO / "sit_vqa").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name.split(".")[0] == "lmms_eval" for name in names):
                importers.add(path.relative_to(REPO).as_posix())
    assert importers == {"sit_vqa/integrations/lmms_eval/model.py"}
    # and the package and the task functions import where lmms-eval is not installed (hidden from every finder)
    code = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] == 'lmms_eval':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "import sit_vqa.integrations.lmms_eval.task_docs, sit_vqa.apps.demo\n"
            "assert not [m for m in sys.modules if m.startswith('lmms_eval')]\n"
            "try:\n"
            "    import sit_vqa.integrations.lmms_eval.model\n"
            "except ModuleNotFoundError:\n"
            "    pass\n"
            "else:\n"
            "    raise SystemExit('the blocker did not block')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
