"""Does a text-only SIT model carry out the sequence? Held-out records, generations, one share.

    python -m sit_vqa.evaluation.text_eval --config text_sit.yaml --checkpoint runs/text_sit/final
    python -m sit_vqa.evaluation.text_eval --config text_sit.yaml --zero-shot        # the untrained model, for comparison

A text SIT target is "Input: X\\nAnswer: O" (or "Translation: X\\nAnswer: O", `sit_vqa.data.text_sit`). An
output carries out the sequence when its first line is that first step exactly (the input repeated or
translated, character for character) and its "Answer:" (read by the shared `parse_sit_output`) is O
exactly. `sequence_scores` also gives the two halves apart. The held-out records are the config's
eval_text_data (and eval_text_data_translated), built with its text_mode. Writes OUT/text_eval.json and
OUT/predictions.jsonl (default OUT: runs/eval/<name>-text). chrF/ROUGE-style metrics live elsewhere; this is
the exact check the tiny model's proof of learning needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sit_vqa.data.prompts import parse_sit_output
from sit_vqa.errors import ConfigError, SitVqaError
from sit_vqa.files import write_json_atomically, write_text_atomically


def follows_sequence(target: str, generation: str) -> dict[str, bool]:
    """Per output: first_step (first line == the target's first line), answer (marked and == the
    target's answer) and sequence (both)."""
    first_step = target.strip().split("\n", 1)[0].strip()
    expected = parse_sit_output(target)
    produced = parse_sit_output(generation)
    first_ok = generation.strip().split("\n", 1)[0].strip() == first_step
    answer_ok = produced.has_answer_marker and produced.answer == expected.answer
    return {"first_step": first_ok, "answer": answer_ok, "sequence": first_ok and answer_ok}


def sequence_scores(targets: Sequence[str], generations: Sequence[str]) -> dict[str, float]:
    """Shares (0-1) of outputs with the first step right, the answer right, and both (the sequence)."""
    if len(targets) != len(generations) or not targets:
        raise ValueError(f"need as many generations as targets (and at least one): {len(generations)} vs {len(targets)}")
    checks = [follows_sequence(t, g) for t, g in zip(targets, generations, strict=True)]
    return {key: round(sum(c[key] for c in checks) / len(checks), 4) for key in ("first_step", "answer", "sequence")}


def held_out_records(data) -> list[dict]:
    """The config's eval_text_data as SIT records (its text_mode)."""
    from sit_vqa.data.text_sit import build_text_sit, load_alpaca

    if not data.eval_text_data:
        raise ConfigError("the config sets no eval_text_data (held-out Alpaca-format records); add one, as "
                          "configs/text_sit.yaml does")
    translated = load_alpaca(data.eval_text_data_translated) if data.eval_text_data_translated else None
    return build_text_sit(load_alpaca(data.eval_text_data), data.text_mode, translated=translated,
                          sources=(data.eval_text_data, data.eval_text_data_translated or "translated records"))


def evaluate_text(config, checkpoint: str | None, *, max_new_tokens: int = 96, batch_size: int = 32) -> tuple[dict, list]:
    """(scores, per-record predictions) of a checkpoint, or of the config's untrained model."""
    from sit_vqa.modeling.checkpoint import load_checkpoint
    from sit_vqa.modeling.generation import GenerationSettings, generate_texts
    from sit_vqa.modeling.loading import build_model

    if checkpoint:
        model, tokenizer, _ = load_checkpoint(checkpoint)
    else:
        model, tokenizer = build_model(config.model, quiet=True)
    records = held_out_records(config.data)
    settings = GenerationSettings(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                  max_instruction_length=config.model.max_instruction_length)
    generations = generate_texts(model, tokenizer, records, settings, progress=False)
    scores = sequence_scores([r["target"] for r in records], generations)
    predictions = [{**record, "generation": text, **follows_sequence(record["target"], text)}
                   for record, text in zip(records, generations)]
    return {"num_records": len(records), "text_mode": config.data.text_mode, **scores}, predictions


def main(argv: Sequence[str] | None = None) -> int:
    from sit_vqa.config import load_config

    parser = argparse.ArgumentParser(prog="python -m sit_vqa.evaluation.text_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file or the name of one in configs/")
    parser.add_argument("--checkpoint", help="checkpoint directory (train.py's final/); leave out with --zero-shot")
    parser.add_argument("--zero-shot", action="store_true", help="score the config's untrained model")
    parser.add_argument("--out", help="output directory (default: runs/eval/<name>-text)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == args.zero_shot:
        parser.error("pass --checkpoint DIR or --zero-shot")
    try:
        config = load_config(args.config, data_roles=("eval",))
        scores, predictions = evaluate_text(config, args.checkpoint, max_new_tokens=args.max_new_tokens)
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = "zero-shot" if args.zero_shot else Path(args.checkpoint).resolve().parent.name
    out_dir = Path(args.out or Path("runs") / "eval" / f"{name}-text")
    write_json_atomically(out_dir / "text_eval.json", scores)
    write_text_atomically(out_dir / "predictions.jsonl",
                          "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    print(f"{name}: {100 * scores['sequence']:.1f}% of {scores['num_records']} held-out outputs carry out the sequence "
          f"(first step exact {100 * scores['first_step']:.1f}%, answer exact {100 * scores['answer']:.1f}%)")
    print(f"wrote text_eval.json, predictions.jsonl to {out_dir}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
