"""Metrics, no torch: the official VQAv2 accuracy (`vqa`), GQA exact match (`gqa`), SQuAD v1.1 EM/F1 (`squad`),
the text SIT figures (`text`); `vqa`, `gqa` and `squad` are also command lines (`python -m sit_vqa.metrics.vqa`)."""
