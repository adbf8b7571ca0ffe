"""Metrics: the official VQAv2 accuracy."""
