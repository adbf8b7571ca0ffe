"""How the model is asked and how its answer is read back: the instruction templates of baseline / SIT /
multitask records, which prompt a trained recipe is asked with, the output markers, and their parser.

Templates are plain `str.format` strings over the fields {question}, {caption} and {answer}.
The defaults follow Hu et al. (NAACL 2025): the baseline asks for the answer alone, SIT asks the
model to describe the image first and then answer, with the target
"Description: <caption>\\nAnswer: <answer>".

`parse_sit_output` is the one place where a generated text is split back into (description,
answer); evaluation uses it too, so training targets and scoring can never disagree on the markers.
The markers are matched case-insensitively everywhere ("ANSWER:" counts), `answer_line` is that rule for
callers that read an answer spanning lines.

The prompt of a trained recipe (`prompt_for_mode`, `resolve_prompt`): a model trained in join mode sit or
mixed is asked with the SIT instruction, one trained in baseline or multitask mode (and a zero-shot model)
with the baseline instruction. Text-only models are asked in their text_mode (plain / repeat / translate).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from sit_vqa.errors import ConfigError, EvaluationError
from sit_vqa.files import load_yaml

BASELINE_TASK = "Answer the input question based on the image"
SIT_TASK = "First describe the image, then answer the input question based on the image"
DESCRIBE_TASK = "Describe the image"

DESCRIPTION_MARKER = "Description:"
ANSWER_MARKER = "Answer:"

TEMPLATE_FIELDS = ("question", "caption", "answer")

PROMPTS = ("auto", "sit", "baseline")  # what a user may ask for; auto follows the trained recipe
SIT_TRAINED_MODES = ("sit", "mixed")  # checkpoints trained in these join modes are asked with the SIT instruction


def prompt_for_mode(mode: str | None) -> str:
    """The prompt a model trained in join `mode` is asked with: SIT for sit/mixed, baseline otherwise (and
    zero-shot, mode None)."""
    return "sit" if mode in SIT_TRAINED_MODES else "baseline"


def resolve_prompt(prompt: str, trained_mode: str | None) -> str:
    """`prompt` unless it is "auto": then the prompt of the join mode the model was trained in."""
    if prompt not in PROMPTS:
        raise EvaluationError(f"unknown prompt {prompt!r}; expected one of {', '.join(PROMPTS)}")
    return prompt_for_mode(trained_mode) if prompt == "auto" else prompt


@dataclass(frozen=True)
class Templates:
    """The instruction/target pair for each record kind. Fields: {question} {caption} {answer}."""

    baseline_instruction: str = BASELINE_TASK + ".\nQuestion: {question}"
    baseline_target: str = "{answer}"
    sit_instruction: str = SIT_TASK + ".\nQuestion: {question}"
    sit_target: str = DESCRIPTION_MARKER + " {caption}\n" + ANSWER_MARKER + " {answer}"
    describe_instruction: str = DESCRIBE_TASK + "."
    describe_target: str = "{caption}"

    def __post_init__(self):
        for name, template in vars(self).items():
            _check_template(name, template)

    def render(self, kind: str, *, question: str = "", caption: str = "", answer: str = "") -> tuple[str, str]:
        """Return (instruction, target) for kind in {"baseline", "sit", "describe"}."""
        if kind not in ("baseline", "sit", "describe"):
            raise ValueError(f"unknown record kind {kind!r}; expected baseline, sit or describe")
        fields = {"question": question, "caption": caption, "answer": answer}
        return (
            getattr(self, f"{kind}_instruction").format(**fields),
            getattr(self, f"{kind}_target").format(**fields),
        )


TEMPLATE_KEYS = tuple(f.name for f in fields(Templates))


def load_templates(overrides: Templates | Mapping[str, str] | str | Path | None) -> Templates:
    """The default templates with `overrides` applied: a mapping of TEMPLATE_KEYS to format strings, the path of
    a YAML file holding one, or a Templates. Checked: known keys and fields, and targets the parser reads back."""
    source = "templates"
    if isinstance(overrides, Templates):  # built in Python: its fields are checked, the parser check is the caller's
        return overrides
    if isinstance(overrides, (str, Path)):
        source = str(overrides)
        try:
            overrides = load_yaml(Path(overrides).read_text(encoding="utf-8"), source) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read templates file {source}: {error}") from None
    overrides = overrides or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: expected a mapping with keys among {list(TEMPLATE_KEYS)}; got {overrides!r}")
    unknown = sorted(set(overrides) - set(TEMPLATE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown template key(s) {unknown} (keys: {', '.join(TEMPLATE_KEYS)}); "
                          "expected a mapping with keys among those")
    try:
        templates = Templates(**overrides)
        check_parsable(templates)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {error}") from None
    return templates


def check_parsable(templates: Templates) -> None:
    """Refuse templates whose SIT / baseline targets `parse_sit_output` cannot read the answer back from.

    Evaluation scores what the parser reads as the answer: a target it cannot split would be trained on
    and then scored wrong without a word. Called where users set templates for training or preparing.
    """
    caption, answer = "a red bus on a street.", "yes"
    for kind in ("sit", "baseline"):
        target = templates.render(kind, question="what is it?", caption=caption, answer=answer)[1]
        parsed = parse_sit_output(target)
        if parsed.answer.strip(" .") != answer:  # (the VQA metric ignores a trailing period)
            raise ValueError(
                f"{kind}_target={getattr(templates, kind + '_target')!r} cannot be split back by the evaluation "
                f"parser: {target!r} parses as description={parsed.description!r}, answer={parsed.answer!r}. "
                f"Put the answer on a line starting '{ANSWER_MARKER} {{answer}}' in sit_target (and the caption "
                f"after '{DESCRIPTION_MARKER}'), and the answer alone (or after 'Answer:') in baseline_target"
            )


def _check_template(name: str, template: str) -> None:
    if not isinstance(template, str):
        raise TypeError(f"template {name} must be a string, got {type(template).__name__}")
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:  # unbalanced braces
        raise ValueError(f"template {name}={template!r} is not a valid format string: {error}") from None
    unknown = used - set(TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(
            f"template {name}={template!r} uses unknown field(s) {sorted(unknown)}; "
            f"allowed: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} (write literal braces as '{{' '}}')"
        )


@dataclass(frozen=True)
class ParsedOutput:
    description: str | None  # None when the text has no "Description:" marker
    answer: str
    has_answer_marker: bool


_DESCRIPTION_RE = re.compile(r"description\s*:", re.IGNORECASE)
_ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)
_LINE_START_ANSWER_RE = re.compile(r"^[ \t]*answer\s*:", re.IGNORECASE | re.MULTILINE)

# The answer rule of `parse_sit_output` as one regular expression, matched once from the start of the text; its
# one group is the answer (before stripping). Branches, tried in order: up to the FIRST "Answer:" that starts a
# line; else up to the last "Answer:" anywhere (one-line outputs); else past leading "Description: ..." lines (no
# marker: the first other line). Frameworks that read answers with a regex use this very string (the lmms-eval
# tasks in sit_vqa/integrations/lmms_eval/tasks/), so they read the answer evaluate.py scores.
ANSWER_PATTERN = r"(?ims)\A(?:.*?^[ \t]*answer\s*:|.*answer\s*:|(?:\s*description[^\S\n]*:[^\n]*)*)\s*([^\n]*)"
_ANSWER_TEXT_RE = re.compile(ANSWER_PATTERN)


def answer_line(text: str, start: int = 0) -> re.Match | None:
    """The first "Answer:" marker that starts a line (any case) at or after `start`, or None: where a
    multi-line answer begins."""
    return _LINE_START_ANSWER_RE.search(text, start)


def parse_sit_output(text: str) -> ParsedOutput:
    """Split a generated text into (description, answer).

    Tolerant of case ("ANSWER:"), of spaces before the colon, of text around the markers and of
    missing markers:
    - the answer marker is the first "Answer:" that starts a line, else the last "Answer:" anywhere
      (one-line outputs); the answer is the rest of that marker's line. The first, not the last: the
      prompts hold no "Answer:" line, so a second one comes from a model that went on past its answer
      with "\nQuestion: ...\nAnswer: ..." -- an answer to a question it made up -- and "Answer:" inside
      a description does not count;
    - without an "Answer:" marker, the answer is the first non-empty line that is not the
      description line (a baseline-style output: trailing "\nQuestion: ..." lines are dropped);
    - the description is the text after "Description:" up to the answer marker or the end of its
      line, or None without a marker.
    The answer is `ANSWER_PATTERN`'s group, the one regex that other frameworks' filters use too.
    """
    text = text.strip()
    answer_match = _LINE_START_ANSWER_RE.search(text) or _last(_ANSWER_RE.finditer(text))
    description_match = _DESCRIPTION_RE.search(text)
    answer = _ANSWER_TEXT_RE.match(text).group(1).strip()  # always matches: every part of it is optional

    description = None
    if description_match:
        end = answer_match.start() if answer_match and answer_match.start() >= description_match.end() else None
        rest = text[description_match.end() : end]
        description = rest.strip() if end is not None else rest.strip().split("\n", 1)[0].strip()
    return ParsedOutput(description, answer, answer_match is not None)


def _last(matches):
    found = None
    for found in matches:
        pass
    return found


# ------------------------------------------------------------------------------------- instruction pools

POOL_TASKS = ("sit", "baseline", "describe")  # the record kinds a pool gives phrasings for
HELD_OUT_TASKS = ("sit", "baseline")  # the prompts evaluation can ask with a held-out phrasing


@dataclass(frozen=True)
class InstructionPool:
    """Phrasings of each task's instruction (str.format strings over {question}): the join draws one per record;
    `held_out` ones are for evaluation only (never trained on)."""

    phrasings: dict[str, tuple[str, ...]]
    held_out: dict[str, tuple[str, ...]]

    def of(self, kind: str) -> tuple[str, ...]:
        return self.phrasings.get(kind, ())

    def held_out_of(self, prompt: str, source: str = "the instruction pool") -> tuple[str, ...]:
        phrasings = self.held_out.get(prompt, ())
        if not phrasings:
            raise ConfigError(f"{source} has no held_out phrasings for the {prompt} prompt; add a held_out: "
                              f"{prompt}: [...] list (see configs/prompts/instruction_pool.yaml)")
        return phrasings

    def to_dict(self) -> dict:
        return {**{kind: list(p) for kind, p in self.phrasings.items()},
                "held_out": {kind: list(p) for kind, p in self.held_out.items()}}


def load_instruction_pool(path: str | Path | Mapping | None) -> InstructionPool | None:
    """The pool in a YAML file (or an already read mapping, e.g. a recorded one), checked; None for None."""
    if path is None:
        return None
    source = "instruction pool" if isinstance(path, Mapping) else str(path)
    if isinstance(path, Mapping):
        document = path
    else:
        try:
            document = load_yaml(Path(path).read_text(encoding="utf-8"), source)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read instruction pool {source}: {error}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: expected a mapping of task -> list of phrasings (tasks: {', '.join(POOL_TASKS)})")
    unknown = sorted(set(document) - {*POOL_TASKS, "held_out"})
    if unknown:
        raise ConfigError(f"{source}: unknown task(s) {unknown}; expected among {', '.join(POOL_TASKS)} and held_out")
    held = document.get("held_out") or {}
    if not isinstance(held, Mapping) or set(held) - set(HELD_OUT_TASKS):
        raise ConfigError(f"{source}: held_out must map {' / '.join(HELD_OUT_TASKS)} to lists of phrasings")
    # a task key that is there holds phrasings (`sit: []` or `sit:` alone is a mistake, not "no pool for sit")
    phrasings = {kind: _phrasings(source, kind, document[kind]) for kind in POOL_TASKS if kind in document}
    held_out = {kind: _phrasings(source, f"held_out.{kind}", held[kind]) for kind in HELD_OUT_TASKS if kind in held}
    return InstructionPool(phrasings, held_out)


def _phrasings(source: str, where: str, values) -> tuple[str, ...]:
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ConfigError(f"{source}: {where} must be a non-empty list of non-empty strings, got {values!r} (remove "
                          f"the key to use the templates' phrasing)")
    allowed = set() if where == "describe" else {"question"}
    for value in values:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as error:
            raise ConfigError(f"{source}: {where}: {value!r} is not a valid format string: {error}") from None
        if used - allowed:
            raise ConfigError(f"{source}: {where}: {value!r} uses {sorted(used - allowed)}; an instruction may use "
                              f"{', '.join('{' + f + '}' for f in sorted(allowed)) or 'no field'} (never the answer "
                              "or the caption: they are the target)")
        if allowed - used:  # the question would vanish from every prompt drawn with this phrasing
            raise ConfigError(f"{source}: {where}: {value!r} has no {{question}} field; every {where} prompt must "
                              "show the question: add {question} where it goes")
    return tuple(values)
