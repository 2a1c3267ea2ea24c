"""Scoring the samples of a quality-vs-NFE suite: every number is a ratio to a noise floor.

* toys: ``evaluate_toy`` against held-out sets seed, seed+1, seed+2 — plain sliced W2, and
  the mode-resolved sliced W2 and mode TVD with the dataset's own mode centres
  (``DataSource.mode_centers``);
* images: ``evaluate_samples`` (the dataset's feature extractor: digits Fréchet distance).

The exact reference scores fresh real data as if it were samples: what an exact sampler gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "EXACT_REFERENCE_SETS",
    "exact_reference",
    "floors",
    "image_metrics",
    "ratio",
    "ratios",
    "toy_metrics",
    "toy_reference_sets",
    "training_reference_sets",
]

EXACT_REFERENCE_SETS = 5  # fresh data sets scored like samples: the ratio of an exact sampler

Score = Callable[[torch.Tensor, Any, int], dict[str, Any]]


def toy_metrics(x: torch.Tensor, data, seed: int) -> dict[str, Any]:
    """``evaluate_toy`` against held-out sets seed, seed+1, seed+2 with the dataset's mode
    centres (no exact W2: ≈ 3 s per cell at 3000 points, and at this n it is dominated by the
    mode counts like plain SW2)."""
    from phasediff.evaluation.metrics import evaluate_toy

    def held_out(n: int, s: int) -> torch.Tensor:
        return data.held_out(n, seed=s)

    return evaluate_toy(
        x.to(torch.float64),
        held_out,
        centers=data.mode_centers,
        seed=seed,
        exact_w2_max_n=0,
    )


def image_metrics(x: torch.Tensor, data, seed: int) -> dict[str, Any]:
    """``evaluate_samples`` of images: the Fréchet distance of the dataset's features."""
    from phasediff.evaluation.report import evaluate_samples

    return evaluate_samples(x.to(torch.float32), data, seed=seed)


def toy_reference_sets(data, num: int, seed: int) -> Iterator[torch.Tensor]:
    """Fresh held-out sets (seeds seed+1000…) of ``num`` points."""
    for i in range(EXACT_REFERENCE_SETS):
        yield data.held_out(num, seed=seed + 1000 + i)


def training_reference_sets(data, num: int, seed: int) -> Iterator[torch.Tensor]:
    """Random sets of ``num`` training examples (for images, whose held-out split is the
    reference itself): without replacement when there are enough."""
    for i in range(EXACT_REFERENCE_SETS):
        gen = torch.Generator().manual_seed(seed + 1000 + i)
        n = data.data.shape[0]
        idx = (
            torch.randperm(n, generator=gen)[:num]
            if num <= n
            else torch.randint(0, n, (num,), generator=gen)
        )
        yield data.data[idx]


def ratio(metrics: dict[str, Any] | None, key: str) -> float | None:
    """The ratio to the floor of metric ``key`` (None when missing or not scored)."""
    return None if metrics is None else (metrics.get(key) or {}).get("ratio")


def ratios(metrics: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, float | None]:
    return {key: ratio(metrics, key) for key in keys}


def floors(metrics: dict[str, Any], keys: Sequence[str]) -> dict[str, float | None]:
    return {key: (metrics.get(key) or {}).get("floor") for key in keys}


def exact_reference(
    score: Score, sets: Iterator[torch.Tensor], keys: Sequence[str], data, seed: int
) -> list[dict[str, float | None]]:
    """The ratios of each real-data set scored like samples."""
    return [ratios(score(x, data, seed), keys) for x in sets]
