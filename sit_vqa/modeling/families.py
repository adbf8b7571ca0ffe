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
