"""Data: VQAv2 + COCO loading, the join, SIT templates, text-only SIT, bundled sample."""
