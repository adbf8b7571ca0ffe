"""Metrics stand alone: importing them loads no torch, no model code and nothing of the join."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["sit_vqa.metrics.vqa", "sit_vqa.metrics.gqa", "sit_vqa.metrics.squad",
                                    "sit_vqa.metrics.text"])
def test_metrics_import_no_torch_model_or_join(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') "
            "or m in ('sit_vqa.modeling.loading', 'sit_vqa.data.join', 'sit_vqa.data.coco')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
