"""A tiny LoRA training and its evaluation print nothing a user cannot act on: no library FutureWarning (peft
asking transformers for a deprecated property), no absl "Using default tokenizer." (rouge-score). Real
processes, as a user runs them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOISE = ("FutureWarning", "Using default tokenizer", "Traceback")


def test_a_lora_training_and_its_text_evaluation_print_no_library_noise(tmp_path):
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "train.py", "--config", "tests/configs/text_lora.yaml", "--output_dir", str(run_dir),
         "--max_steps", "2", "--report_to", "none"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = subprocess.run(
        [sys.executable, "evaluate.py", "--config", "tests/configs/text_lora.yaml", "--checkpoint", str(run_dir),
         "--task", "text", "--limit", "2", "--max-new-tokens", "4", "--no-progress", "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    for step in (trained, evaluated):
        for noise in NOISE:
            assert noise not in step.stdout + step.stderr, (noise, step.stderr[-3000:])
