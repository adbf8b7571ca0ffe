"""What an exported model's README says about each image family (`ModelFamily.export_card`): the model it
is, what trained, and how to load and prompt it. `sit_vqa.apps.export.model_card` writes the rest (recipe,
prompt, scores) the same way for every family. Imports nothing: the cards are text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExportCard:
    model: str  # what the base model became, opening the card's first sentence ("InstructBLIP fine-tuned")
    base: str  # the base model named in that sentence
    trained: str  # what trained, after "- trained: "
    usage: list[str]  # the Python lines that load the export and ask it one question


def instructblip_card(config: Mapping[str, Any], instruction: str, *, encoder_decoder: bool) -> ExportCard:
    """encoder_decoder: the language model is a T5 (generate returns the answer alone, no prompt to cut off)."""
    base = config.get("model_name_or_path") or \
        f"the tiny offline InstructBLIP built in code (tiny_model: {config.get('tiny_model')})"
    weights = "every weight" if config.get("train_all") else \
        "the Q-Former, its query tokens and the language projection (ViT and LLM frozen)"
    if config.get("use_lora"):
        weights = (f"LoRA adapters (r {config.get('lora_r')}) on {config.get('lora_target_modules') or 'the default placements'}, "
                   "merged into the weights" + (", with the query tokens and language projection whole"
                                                if config.get("train_query_tokens_and_projection", True) else ""))
    if config.get("quantization_bit"):
        weights += f"; trained on a {config['quantization_bit']}-bit LLM, exported in full precision"
    usage = [
        "from PIL import Image",
        "from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor",
        "model = InstructBlipForConditionalGeneration.from_pretrained(DIR)",
        "processor = InstructBlipProcessor.from_pretrained(DIR)",
        f"prompt = {instruction!r}.format(question='What is on the table?')",
        "inputs = processor(images=Image.open('photo.jpg').convert('RGB'), text=prompt, return_tensors='pt')",
        "ids = model.generate(**inputs, max_new_tokens=64)",
        "print(processor.batch_decode(ids[:, inputs['input_ids'].shape[1]:], skip_special_tokens=True)[0])"
        if not encoder_decoder else "print(processor.batch_decode(ids, skip_special_tokens=True)[0])",
    ]
    return ExportCard(model="InstructBLIP fine-tuned", base=base, trained=weights, usage=usage)


def chat_vlm_card(config: Mapping[str, Any], instruction: str, *, encoder_decoder: bool) -> ExportCard:
    """A chat VLM: its own loader classes and chat template."""
    switches = ", ".join(f"{name}: {config.get(name)}" for name in
                         ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "use_lora"))
    usage = [
        "from PIL import Image",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "model = AutoModelForImageTextToText.from_pretrained(DIR)",
        "processor = AutoProcessor.from_pretrained(DIR)",
        f"prompt = {instruction!r}.format(question='What is on the table?')",
        "messages = [{'role': 'user', 'content': [{'type': 'image', 'image': Image.open('photo.jpg').convert('RGB')},",
        "                                         {'type': 'text', 'text': prompt}]}]",
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, "
        "return_tensors='pt')",
        "ids = model.generate(**inputs, max_new_tokens=64)",
        "print(processor.batch_decode(ids[:, inputs['input_ids'].shape[1]:], skip_special_tokens=True)[0])",
    ]
    return ExportCard(model="A chat vision-language model fine-tuned", base=str(config.get("model_name_or_path")),
                      trained=f"{switches} (LoRA adapters, when used, merged into the weights)", usage=usage)
