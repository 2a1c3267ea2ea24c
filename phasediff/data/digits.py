"""The 8×8 handwritten digits that ship inside scikit-learn (1797 images, no download)."""

from __future__ import annotations

from functools import lru_cache

import torch

from phasediff.data.toys import check_seed

__all__ = ["N_ALL", "N_TEST", "N_TRAIN", "SPLITS", "load_digits"]

N_ALL = 1797
N_TRAIN = 1500
N_TEST = N_ALL - N_TRAIN  # 297
SPLITS = ("all", "test", "train")


@lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 images as (N, 1, 8, 8) float32 in [−1, 1] and int64 labels, sklearn order."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    pixels = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if pixels.shape[0] != N_ALL:
        raise RuntimeError(f"sklearn's digits have {pixels.shape[0]} images, expected {N_ALL}.")
    # Grey levels are the integers 0…16, so x/8 − 1 maps them exactly onto {−1, −7/8, …, 1}.
    return pixels / 8.0 - 1.0, labels


def load_digits(split: str = "train", *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: float32 (N, 1, 8, 8) in [−1, 1] and int64 labels (N,).

    Pixels are sklearn's grey levels 0…16 mapped by x/8 − 1. ``"all"`` gives the 1797
    images in sklearn's order; ``"train"`` the first 1500 and ``"test"`` the last 297 of
    the permutation ``torch.randperm(1797)`` drawn from a CPU generator seeded with
    ``seed``, so the two are disjoint and together make up ``"all"``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}.")
    seed = check_seed(seed)
    images, labels = _all_digits()
    if split == "all":
        return images.clone(), labels.clone()
    order = torch.randperm(N_ALL, generator=torch.Generator().manual_seed(seed))
    index = order[:N_TRAIN] if split == "train" else order[N_TRAIN:]
    return images[index], labels[index]
