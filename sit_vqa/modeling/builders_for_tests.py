"""Builders that only tests and benchmarks use (bench/, tests/): files and scripted models made for checking
the package, kept apart from what users import (the replicas themselves, `sit_vqa.modeling.replicas` and
`sit_vqa.modeling.chat_replicas`, and the photo-like images of `sit_vqa.samples.photo_like` stay where they are).

- `force_lm_output`: a replica whose LM greedily says given tokens ("red </s> blue"), for stopping criteria;
- `save_chat_replica`: a tiny chat VLM saved as a hub-style directory, to load through the real path;
- `write_photo_like_jpegs`: a directory of photo-like COCO-size JPEGs, for the image-pipeline benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import InstructBlipForConditionalGeneration

from sit_vqa.modeling.chat_replicas import ChatReplicaKind, build_chat_replica
from sit_vqa.samples.photo_like import COCO_SIZE, photo_like_jpeg


@torch.no_grad()
def force_lm_output(model: InstructBlipForConditionalGeneration, token_ids: list[int]) -> None:
    """Set a decoder-only LM's weights so that greedy decoding after any prompt emits token_ids[0],
    token_ids[1], ... and then repeats the last one.

    Every layer's output projections are zeroed, so the last hidden state is the current token's
    (normalised) embedding: the next token then depends on the current one only. Prompt tokens share one
    embedding direction that the lm_head maps to token_ids[0]; token_ids[i] gets direction i + 1, mapped
    to token_ids[i + 1]. For tests and demos of stopping criteria (a model that says "red </s> blue").
    """
    lm = model.language_model
    if len(set(token_ids)) != len(token_ids) or len(token_ids) + 1 > lm.config.hidden_size:
        raise ValueError("token_ids must be distinct and fewer than the LM's hidden size")
    for name, param in lm.named_parameters():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            param.zero_()
    embeddings = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings().weight
    basis = torch.eye(lm.config.hidden_size, dtype=embeddings.dtype, device=embeddings.device)
    embeddings.copy_(basis[0].expand_as(embeddings))
    head.zero_()
    for i, token in enumerate(token_ids):
        embeddings[token] = basis[i + 1]
        head[token] += basis[i]  # the previous state (prompt: 0) -> this token
    head[token_ids[-1]] += basis[len(token_ids)]  # the last token repeats


def save_chat_replica(kind: ChatReplicaKind, directory: str | Path, **options) -> Path:
    """Build the replica and save it as a hub-style directory (safetensors + processor files)."""
    directory = Path(directory)
    model, processor = build_chat_replica(kind, **options)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def write_photo_like_jpegs(directory: str | Path, count: int, *, seed: int = 0, size=COCO_SIZE, quality=90) -> list[Path]:
    """Write `count` JPEGs (photo_<i>.jpg) into directory, reusing files already there; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"photo_{size[0]}x{size[1]}_q{quality}_{seed + index:06d}.jpg"
        if not path.exists():
            path.write_bytes(photo_like_jpeg(seed + index, size, quality))
        paths.append(path)
    return paths
