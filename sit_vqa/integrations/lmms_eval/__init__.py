"""lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval) tasks and model for sit-vqa.

- tasks/ (TASKS_DIR, for `--include_path`): sit_vqav2 and sit_gqa on the official files the environment names
  (task_docs.py), asked with the SIT instruction, the answer read by the one answer regex of
  sit_vqa.data.prompts (ANSWER_PATTERN), scored as evaluate.py scores.
- model.py: `--model sit_vqa` (registered through the `lmms_eval.models` entry-point group), the only module that
  imports lmms_eval; this package and task_docs.py import without it.

README.md ("lmms-eval") has the command; docs/INTEGRATIONS.md what was run, with which lmms-eval version.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
