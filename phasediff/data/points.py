"""Your own vector data: ``data.name = "points"`` with ``data.path`` to an .npy, .npz or .csv
file of N points in d dimensions (docs/training.md, "Bring your own data").

* .npy: one (N, d) array (or (N,): d = 1).
* .npz: the array named by ``data.key``, or the only array in the archive.
* .csv: numeric columns separated by commas; one header row is detected and skipped.

Rows are split once into a training part and a held-out part by a permutation seeded with
``seed`` (``held_out_fraction`` of the rows, at least 1, held out). With ``standardize`` every
coordinate is shifted and scaled by the *training* part's mean and standard deviation; the run
records the two vectors (``PointsStandardization``) and sampling maps samples back.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phasediff.data.source import DataSource, held_out_rows

__all__ = ["POINTS_SUFFIXES", "PointsStandardization", "load_points", "points_source"]

POINTS_SUFFIXES = (".npy", ".npz", ".csv")


@dataclass(frozen=True)
class PointsStandardization:
    """x_model = (x − mean) / std per coordinate; `decode` undoes it."""

    mean: torch.Tensor  # (d,) float64
    std: torch.Tensor  # (d,) float64

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std).to(x.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() * self.std + self.mean).to(x.dtype)


def _where(path: Path) -> str:
    return f"data.path {str(path)!r}"


def _read_csv(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8-sig")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{_where(path)} has no rows; it needs N ≥ 1 rows of numbers.")

    def numeric(row: list[str]) -> bool:
        try:
            [float(c) for c in row]
        except ValueError:
            return False
        return True

    if not numeric(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"{_where(path)} has a header but no data rows.")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"{_where(path)} has ragged rows: data row {i + 1} has {len(row)} columns, "
                f"the first has {width}; every row needs the same number of numeric columns."
            )
        if not numeric(row):
            bad = next(c for c in row if not _is_float(c))
            raise ValueError(
                f"{_where(path)} has a non-numeric value {bad.strip()!r} in data row {i + 1}; "
                "every column must be a number (one header row is allowed)."
            )
    return np.array([[float(c) for c in row] for row in rows], dtype=np.float64)


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_points(path: str | Path, key: str | None = None) -> np.ndarray:
    """The (N, d) float64 array in `path` (.npy, .npz with `key` or one array, .csv), checked:
    at least one row, numbers only, all finite. One ValueError sentence otherwise."""
    path = Path(path)
    if path.suffix.lower() not in POINTS_SUFFIXES:
        raise ValueError(
            f"{_where(path)} must end in {', '.join(POINTS_SUFFIXES)} (an (N, d) array of points)."
        )
    if not path.is_file():
        raise ValueError(f"{_where(path)} does not exist; point it at your .npy/.npz/.csv file.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        array = _read_csv(path)
    else:
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:  # a corrupt file, a pickled object array, not numpy at all
            raise ValueError(
                f"{_where(path)} is not a readable {suffix} file ({type(exc).__name__}); save it "
                "with numpy.save/numpy.savez (object arrays are refused)."
            ) from None
        if suffix == ".npz":
            names = list(loaded.files)
            if key is None and len(names) != 1:
                loaded.close()
                raise ValueError(
                    f"{_where(path)} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                    "name one with data.key."
                )
            name = names[0] if key is None else key
            if name not in names:
                loaded.close()
                raise ValueError(
                    f"{_where(path)} has no array {name!r} (data.key); it has: "
                    f"{', '.join(names) or 'nothing'}."
                )
            array = np.asarray(loaded[name])
            loaded.close()
        else:
            array = np.asarray(loaded)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{_where(path)} holds {array.dtype} values; points must be numbers (int or float)."
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"{_where(path)} holds an array of shape {array.shape}; points must be (N, d)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{_where(path)} holds {array.shape[0]} rows; it needs N ≥ 1 points.")
    array = array.astype(np.float64)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{_where(path)} has {int((~finite).sum())} rows with NaN or Inf (the first is row "
            f"{row}); remove or impute them."
        )
    return array


def points_source(
    path: str | Path,
    *,
    key: str | None = None,
    seed: int = 0,
    held_out_fraction: float = 0.1,
    standardize: bool = False,
    standardization: PointsStandardization | None = None,
) -> DataSource:
    """The `DataSource` of a points file: a seeded split into training and held-out rows,
    optionally standardised (by `standardization` when given, e.g. the one a run recorded,
    else by the training rows' mean and std). ``source.standardization`` is the map used.
    ``held_out(n, s)`` draws from the held-out rows, without replacement when n is at most
    their number and with replacement otherwise."""
    array = load_points(path, key)
    n = array.shape[0]
    if not (isinstance(held_out_fraction, int | float) and 0 < held_out_fraction < 1):
        raise ValueError(f"data.held_out_fraction must be in (0, 1), got {held_out_fraction!r}.")
    n_held = max(1, math.floor(n * held_out_fraction))
    if n - n_held < 1:
        raise ValueError(
            f"{_where(Path(path))} has {n} rows; it needs at least 2 (training and held out)."
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    points = torch.from_numpy(array)
    train, held = points[perm[n_held:]], points[perm[:n_held]]
    if standardize and standardization is None:
        std = train.std(0, correction=0) if train.shape[0] > 1 else torch.ones(train.shape[1])
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays as is
        standardization = PointsStandardization(mean=train.mean(0), std=std)
    if standardization is not None:
        if standardization.mean.shape != (train.shape[1],):
            raise ValueError(
                f"the run's recorded standardisation has {standardization.mean.shape[0]} "
                f"coordinates, but {_where(Path(path))} has {train.shape[1]}."
            )
        train, held = standardization.encode(train), standardization.encode(held)
    train, held = train.float(), held.float()

    return DataSource(
        "points", train, "vector", held_out_rows(held), standardization=standardization
    )
