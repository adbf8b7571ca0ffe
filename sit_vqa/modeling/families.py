"""What a loaded model is, read off its config: the one place the code asks which family a model belongs to
(never its name). Imports nothing, so that the collator can ask without loading the loading code (peft, the
Auto classes)."""

from __future__ import annotations


def is_encoder_decoder(model) -> bool:
    """True when the language model is an encoder-decoder (T5), for InstructBLIP and plain LMs alike."""
    config = model.config
    if hasattr(config, "use_decoder_only_language_model"):
        return not config.use_decoder_only_language_model
    return bool(getattr(config, "is_encoder_decoder", False))


IMAGE_MODEL_TYPES = ("instructblip", "image_text_to_text")  # the model types that answer image sets (VQAv2, GQA)


def answers_images(model_type: str | None) -> bool:
    """Whether a model of `model_type` takes images (the VQA sets, the demo, the export)."""
    return model_type in IMAGE_MODEL_TYPES
