"""Paired differences between two arms of an experiment (the same seeds, the same questions), with a 95%
interval that resamples seeds and questions alike, and the verdict the interval supports. No torch."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 2000
ONE_SEED = "one seed: no interval over seeds"


def paired_bootstrap(differences, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean of a seeds x questions array of paired differences, with a 95% percentile interval from resampling
    seeds and questions (with replacement): the seed-to-seed spread counts, not only the questions'. With one
    seed only the questions are resampled (`seeds` says how many there were; `verdict` reads it)."""
    differences = np.asarray(differences, dtype=float)
    n_seeds, n_questions = differences.shape
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for b in range(samples):
        seeds = rng.integers(0, n_seeds, n_seeds)
        questions = rng.integers(0, n_questions, n_questions)
        means[b] = differences[np.ix_(seeds, questions)].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(differences.mean()), 2), "low": round(float(low), 2), "high": round(float(high), 2),
            "seeds": n_seeds, "questions": n_questions}


def verdict(interval: dict[str, float]) -> str:
    """"SIT better" / "SIT worse" when the whole interval is on one side of 0, "not separated" otherwise; no
    verdict from one seed (its interval knows nothing of the seed-to-seed spread)."""
    if interval["seeds"] < 2:
        return ONE_SEED
    if interval["low"] > 0:
        return "SIT better"
    if interval["high"] < 0:
        return "SIT worse"
    return "not separated"
