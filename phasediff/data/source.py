"""``DataSource``: a fixed training set to draw batches from, plus held-out data."""

from __future__ import annotations

from collections.abc import Callable

import torch

from phasediff.data.toys import check_count, check_seed

__all__ = ["SEED_RANGE", "DataSource", "held_out_rows"]

KINDS = ("vector", "image")

# Seeds of get_data and held_out live in [0, 2**31); a toy's held-out set is drawn from the
# generator seeded with 2**31 + seed. torch's CPU generator only uses the low 32 bits of a
# seed, so the two ranges give distinct streams: held-out points never replay training ones.
SEED_RANGE = 2**31


class DataSource:
    """A named dataset: a fixed training set ``data`` and a sampler of held-out data.

    Attributes: ``name``; ``data`` (training tensor, shape (N, *data_shape)); ``data_shape``;
    ``kind`` ("vector" for toys, "image" for digits); ``labels`` (int64 (N,) or None).

    Evaluation facts, set where the dataset is built (``phasediff.data.registry``) so that
    evaluation never branches on a dataset's name (docs/evaluation.md):

    * ``mode_centers``: float64 (M, d) centres of well separated modes (the mode-resolved
      metrics of toys), or None;
    * ``features``: the feature extractor of image Fréchet distances, a name known to
      ``phasediff.evaluation.fid.FEATURE_EXTRACTORS`` (``"digits"``) or a callable
      images → (N, F) features, or None;
    * ``reference_size``: how many held-out examples evaluation compares image samples
      against (digits: its whole 297-image test split), or None for evaluation's default.

    ``standardization``: for user data read with ``standardize`` (``phasediff.data.points``),
    the map with ``encode``/``decode`` between the file's units and the units of ``data`` and
    ``held_out`` (the model's); None when the two are the same.
    """

    def __init__(
        self,
        name: str,
        data: torch.Tensor,
        kind: str,
        held_out_sampler: Callable[[int, int], torch.Tensor],
        labels: torch.Tensor | None = None,
        *,
        mode_centers: torch.Tensor | None = None,
        features: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_size: int | None = None,
        standardization=None,
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
        if mode_centers is not None:
            mode_centers = torch.as_tensor(mode_centers, dtype=torch.float64)
            if mode_centers.ndim != 2 or mode_centers.shape[1:] != self.data_shape:
                raise ValueError(
                    f"mode_centers must have shape (M, {', '.join(map(str, self.data_shape))}), "
                    f"got {tuple(mode_centers.shape)}."
                )
        if features is not None and not (isinstance(features, str) or callable(features)):
            raise ValueError(f"features must be a name or a callable, got {features!r}.")
        if reference_size is not None:
            reference_size = check_count(reference_size, "reference_size")
        self.mode_centers = mode_centers
        self.features = features
        self.reference_size = reference_size
        self.standardization = standardization

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


def held_out_rows(rows: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """The held-out sampler of a fixed held-out split `rows`: ``n`` rows drawn with the
    generator seeded by the seed, without replacement when ``n ≤ len(rows)``, with
    replacement otherwise (digits' test split, the held-out rows of a points file)."""
    size = rows.shape[0]

    def held_out(n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        if n <= size:
            index = torch.randperm(size, generator=generator)[:n]
        else:
            index = torch.randint(0, size, (n,), generator=generator)
        return rows[index]

    return held_out
