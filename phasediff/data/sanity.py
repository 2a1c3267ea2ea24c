"""Sample sanity: count samples that are not finite or lie far outside the training data's
range, so that a diverged sampler never writes NaN or exploded points silently
(docs/samplers.md, "Sample sanity"; issue 17 item 6).

The training data's per-dimension minimum and maximum are recorded in the run directory at
training start (``data_range.json``, written by the trainer); a run without that file (made
before it existed) falls back to the range of its rebuilt training set. Both are in the
model's units (standardised, for points data read with ``standardize``), so samples are
checked as the sampler returns them, before any mapping back to the file's units.

A sample is *far* when a coordinate leaves the data's range widened on each side by
``margin`` (default 1) times that dimension's width; a dimension narrower than the median
width (e.g. a pixel that is constant in the training set) counts with the median width.
With the default, a finite sample is far when it lies more than one range width outside the
box of the training data: diverged or exploded samples, not the ordinary spread of a model.

Imports nothing of phasediff but the crash-safe writer (``phasediff.files``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from phasediff.files import atomic_write_text

__all__ = [
    "DATA_RANGE_FILE",
    "MARGIN",
    "DataRange",
    "SampleCheck",
    "SampleWarning",
    "check_samples",
    "run_data_range",
    "write_data_range",
]

DATA_RANGE_FILE = "data_range.json"
MARGIN = 1.0
"""Far = more than MARGIN range widths outside the data's per-dimension range."""


class SampleWarning(UserWarning):
    """Samples that are not finite or lie far outside the training data's range."""


@dataclass(frozen=True)
class DataRange:
    """Per-dimension minimum ``low`` and maximum ``high`` (float64, shaped like one sample)
    of ``n`` training examples, in the model's units."""

    low: torch.Tensor
    high: torch.Tensor
    n: int

    @classmethod
    def of(cls, data: torch.Tensor) -> DataRange:
        """The range of a training tensor (N, *data_shape) (non-finite entries ignored)."""
        x = data.detach().to("cpu", torch.float64)
        finite = torch.isfinite(x)
        low = torch.where(finite, x, math.inf).amin(0)
        high = torch.where(finite, x, -math.inf).amax(0)
        return cls(low, high, int(x.shape[0]))

    def as_dict(self) -> dict:
        return {
            "version": 1,
            "units": "model",
            "n": self.n,
            "shape": list(self.low.shape),
            "low": self.low.flatten().tolist(),
            "high": self.high.flatten().tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DataRange:
        shape = tuple(int(s) for s in d["shape"])
        low = torch.tensor(d["low"], dtype=torch.float64).reshape(shape)
        high = torch.tensor(d["high"], dtype=torch.float64).reshape(shape)
        if not (bool(torch.isfinite(low).all()) and bool((high >= low).all())):
            raise ValueError("the recorded data range is not finite or has high < low.")
        return cls(low, high, int(d["n"]))

    def bounds(self, margin: float = MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
        """The box a sample must stay in: [low − margin·w, high + margin·w] per dimension,
        w = max(high − low, median width) (a tiny floor where every width is 0)."""
        width = self.high - self.low
        floor = max(float(width.flatten().median()), 1e-6 * (1.0 + float(self.high.abs().max())))
        width = width.clamp_min(floor)
        return self.low - margin * width, self.high + margin * width


@dataclass(frozen=True)
class SampleCheck:
    """Counts of a sample set: ``num`` samples, ``non_finite`` with a NaN or Inf,
    ``far`` finite but far outside the data's range; ``ok`` (num,) bool marks the others,
    ``finite`` (num,) the finite ones; ``source`` says where the range came from
    ("recorded" or "training data")."""

    num: int
    non_finite: int
    far: int
    ok: torch.Tensor
    finite: torch.Tensor
    margin: float
    source: str

    @property
    def bad(self) -> int:
        return self.non_finite + self.far

    def as_dict(self) -> dict:
        """The counts for a JSON report (no mask)."""
        return {
            "num": self.num,
            "non_finite": self.non_finite,
            "far": self.far,
            "margin": self.margin,
            "range": self.source,
        }

    def message(self, outcome: str = "they are kept") -> str | None:
        """One line for the warning (``outcome``: what was done with the bad samples), or None
        when every sample is fine."""
        if not self.bad:
            return None
        parts = []
        if self.non_finite:
            parts.append(f"{self.non_finite} of {self.num} samples are not finite (NaN/Inf)")
        if self.far:
            parts.append(
                f"{self.far} of {self.num} lie far outside the training data's range (more than "
                f"{self.margin:g}× its width beyond the per-dimension min/max)"
            )
        return (
            f"{' and '.join(parts)}; {outcome}. The sampler or the model diverged: try more "
            "steps, another grid or sampler, or a longer-trained model."
        )

    def warn(self, outcome: str = "they are kept", stacklevel: int = 2) -> None:
        """Issue the one-line `SampleWarning` when any sample is bad."""
        text = self.message(outcome)
        if text is not None:
            warnings.warn(text, SampleWarning, stacklevel=stacklevel + 1)


def check_samples(
    x: torch.Tensor, data_range: DataRange, *, margin: float = MARGIN, source: str = "recorded"
) -> SampleCheck:
    """Count the rows of ``x`` (N, *data_shape), in the model's units, that are not finite
    or lie far outside ``data_range`` (module docstring)."""
    if not (isinstance(x, torch.Tensor) and x.ndim >= 1):
        raise ValueError("samples must be a tensor shaped (N, *data_shape).")
    if tuple(x.shape[1:]) != tuple(data_range.low.shape):
        raise ValueError(
            f"samples have shape {tuple(x.shape)}, the data range is for one sample of shape "
            f"{tuple(data_range.low.shape)}."
        )
    flat = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    finite = torch.isfinite(flat).all(1)
    low, high = (b.flatten() for b in data_range.bounds(margin))
    inside = ((flat >= low) & (flat <= high)).all(1)
    ok = finite & inside
    return SampleCheck(
        num=int(x.shape[0]),
        non_finite=int((~finite).sum()),
        far=int((finite & ~inside).sum()),
        ok=ok,
        finite=finite,
        margin=float(margin),
        source=source,
    )


def write_data_range(run_dir: str | Path, data: torch.Tensor) -> DataRange:
    """Record the range of the training tensor in ``run_dir/data_range.json``."""
    data_range = DataRange.of(data)
    atomic_write_text(Path(run_dir) / DATA_RANGE_FILE, json.dumps(data_range.as_dict()))
    return data_range


def run_data_range(path: str | Path, data: torch.Tensor) -> tuple[DataRange, str]:
    """(range, source) of a run directory or checkpoint file: the recorded
    ``data_range.json`` of its run when there is a readable one, else the range of the rebuilt
    training tensor ``data`` (runs made before the file existed)."""
    path = Path(path)
    for folder in (path,) if path.is_dir() else (path.parent, path.parent.parent):
        file = folder / DATA_RANGE_FILE
        if file.is_file():
            try:
                recorded = DataRange.from_dict(json.loads(file.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                break  # unreadable or foreign: fall back to the training data
            if tuple(recorded.low.shape) == tuple(data.shape[1:]):
                return recorded, "recorded"
            break
    return DataRange.of(data), "training data"
