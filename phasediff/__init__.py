"""phasediff: exact, fast phase-space diffusion models (see README.md and docs/).

    run = phasediff.load("runs/toy_cld")     # or phasediff.train("configs/toy_cld.toml", out=...)
    x = run.sample(2000).x                   # run.evaluate(...) for distances with noise floors

`train`, `load` and `TrainedRun` live in `phasediff.api`; they are imported on first use so
that ``import phasediff`` does not load training, plotting and evaluation.
"""

from typing import TYPE_CHECKING, Any

from phasediff import processes

if TYPE_CHECKING:
    from phasediff.api import TrainedRun, load, train

__all__ = ["TrainedRun", "load", "processes", "train"]
__version__ = "0.1.0"

_API = ("TrainedRun", "load", "train")


def __getattr__(name: str) -> Any:
    if name in _API:
        from phasediff import api

        return getattr(api, name)
    raise AttributeError(f"module 'phasediff' has no attribute {name!r}")
