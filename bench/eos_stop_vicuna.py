"""Generation on the Vicuna-7B hub structure stops at the tokenizer's EOS ("</s>" = 2), not the LM config's (1).

    python bench/eos_stop_vicuna.py

Saves a tiny replica of Salesforce/instructblip-vicuna-7b (sit_vqa.modeling.replicas) to a temporary directory, loads
it through the real path (`load_instructblip(DIR)`), scripts its LM to emit "red", "</s>", then "blue" forever,
and generates three ways: the bare LM generation config of the hub files (eos 1), `sit_vqa.evaluation.vqa.
generate_texts`, and `generate(**generation_kwargs(tokenizer))` (what the demo and export use). Prints the
new token ids and texts of each.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from PIL import Image

from sit_vqa.modeling.generation import GenerationSettings, generate_texts
from sit_vqa.modeling.generation import generation_kwargs
from sit_vqa.modeling.loading import load_instructblip
from sit_vqa.modeling.builders_for_tests import force_lm_output
from sit_vqa.modeling.replicas import replica_generation_config, save_replica

MAX_NEW_TOKENS = 8


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_replica("vicuna-7b", Path(tmp) / "vicuna-7b")
        model, processor = load_instructblip(directory)
    tokenizer = processor.tokenizer
    red, blue = tokenizer.convert_tokens_to_ids(["▁red", "▁blue"])
    force_lm_output(model, [red, tokenizer.eos_token_id, blue])
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    inputs = processor(images=image, text="What color is the circle?", return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    print(f"tokenizer eos {tokenizer.eos_token_id} ({tokenizer.eos_token}); hub LM config eos "
          f"{model.config.text_config.eos_token_id}; max_new_tokens {MAX_NEW_TOKENS}")

    hub = replica_generation_config("vicuna-7b")  # the files' generation config, as before the fix
    with torch.inference_mode():
        before = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=hub.eos_token_id,
                                pad_token_id=hub.pad_token_id)
        after = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, **generation_kwargs(tokenizer))
    report("hub generation config (eos 1)", before[0, prompt_length:].tolist(), tokenizer)
    report("generation_kwargs(tokenizer)", after[0, prompt_length:].tolist(), tokenizer)
    texts = generate_texts(model, processor, [{"instruction": "What color is the circle?", "image": image}],
                           GenerationSettings(batch_size=1, max_new_tokens=MAX_NEW_TOKENS), progress=False)
    print(f"generate_texts: {texts!r}")


def report(label: str, new_ids: list[int], tokenizer) -> None:
    text = tokenizer.decode(new_ids, skip_special_tokens=True).strip()
    print(f"{label}: {len(new_ids)} new tokens {new_ids} -> {text!r}")


if __name__ == "__main__":
    main()
