"""Generate a small, deterministic Alpaca-format text set over a closed vocabulary, with a German copy.

Every record asks for one of a few word tasks on 2-4 words drawn from `WORDS` (reverse them, sort them,
count them, name the first or the last one); the output follows from the input, so a model that learned
the task is right by construction. The second file holds the same records (aligned by index) with the
input in German, as `text_mode: translate` needs (`sit_vqa.data.text_sit`). The bundled Alpaca sample
(data/alpaca_sample, 35 open-vocabulary records) shows the format; this set is what a tiny byte-level LM
can learn from in a minute on a CPU: repeat (or translate) the input exactly, then answer.

    python -m sit_vqa.samples.text_sample --out data/text_sample     # regenerates the committed files

writes text_{train,val}_{en,de}.json. Determinism: `random.Random` seeded by strings (SHA-512, independent
of PYTHONHASHSEED), JSON with a fixed layout.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

# English -> German, ASCII only (one byte per character for the byte-level tokenizer).
WORDS = {
    "cat": "katze", "dog": "hund", "house": "haus", "tree": "baum", "sun": "sonne", "moon": "mond",
    "fish": "fisch", "bird": "vogel", "book": "buch", "bread": "brot", "apple": "apfel", "milk": "milch",
    "red": "rot", "blue": "blau", "water": "wasser", "night": "nacht",
}  # fmt: skip
TASKS = {
    "Reverse the order of the words.": lambda words: " ".join(reversed(words)),
    "Sort the words alphabetically.": lambda words: " ".join(sorted(words)),
    "Count the words.": lambda words: str(len(words)),
    "Give the first word.": lambda words: words[0],
    "Give the last word.": lambda words: words[-1],
}
SPLIT_SIZES = {"train": 1500, "val": 200}
DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "text_sample"
DEFAULT_SEED = 0


def make_record(rng: random.Random) -> tuple[dict, dict]:
    """(English record, the same record with the input in German)."""
    instruction = rng.choice(sorted(TASKS))
    words = [rng.choice(sorted(WORDS)) for _ in range(rng.randint(2, 4))]
    output = TASKS[instruction](words)
    english = {"instruction": instruction, "input": " ".join(words), "output": output}
    german = {**english, "input": " ".join(WORDS[word] for word in words)}
    return english, german


def build_split(split: str, n_records: int, seed: int = DEFAULT_SEED) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"sit-vqa-text-sample:{seed}:{split}")
    pairs = [make_record(rng) for _ in range(n_records)]
    return [english for english, _ in pairs], [german for _, german in pairs]


def write_text_sample(out_dir: str | Path, sizes: dict[str, int] = SPLIT_SIZES, seed: int = DEFAULT_SEED) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, n_records in sizes.items():
        for language, records in zip(("en", "de"), build_split(split, n_records, seed)):
            path = out_dir / f"text_{split}_{language}.json"
            path.write_text(json.dumps(records, indent=1, ensure_ascii=True) + "\n", encoding="ascii")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sit_vqa.samples.text_sample", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (e.g. data/text_sample)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    for path in write_text_sample(args.out, seed=args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
