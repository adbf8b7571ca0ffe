"""The sample transform a model + processor need: the one dispatch point between InstructBLIP / text-only
samples (`sit_vqa.modeling.collate.SampleTransform`) and chat VLM samples (`sit_vqa.modeling.chat_vlm`)."""

from __future__ import annotations

from sit_vqa.modeling.chat_vlm import ChatSampleTransform, is_chat_processor
from sit_vqa.modeling.collate import SampleTransform


def transform_for_model(model, processor_or_tokenizer, **options):
    """SampleTransform.for_model, or a ChatSampleTransform for an image_text_to_text processor (which makes its
    own pixels: image_pipeline and feature_cache do not apply to it)."""
    if is_chat_processor(processor_or_tokenizer):
        kept = {key: options[key] for key in ("max_instruction_length", "max_target_length", "image_dir") if key in options}
        return ChatSampleTransform(processor_or_tokenizer, **kept)
    return SampleTransform.for_model(model, processor_or_tokenizer, **options)
