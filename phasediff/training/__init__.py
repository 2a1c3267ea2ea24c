"""Training: config → data → process → model → objective (docs/design.md §5)."""

from phasediff.training.checkpoint import load_checkpoint, save_checkpoint
from phasediff.training.config import Config, load_config
from phasediff.training.errors import NonFiniteLossError
from phasediff.training.trainer import (
    Trainer,
    build_model,
    build_process,
    load_trained,
    train,
)

__all__ = [
    "Config",
    "NonFiniteLossError",
    "Trainer",
    "build_model",
    "build_process",
    "load_checkpoint",
    "load_config",
    "load_trained",
    "save_checkpoint",
    "train",
]
