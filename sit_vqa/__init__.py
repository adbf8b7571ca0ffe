"""sit-vqa: sequential instruction tuning (SIT) for vision-language models."""

__version__ = "0.1.0"
