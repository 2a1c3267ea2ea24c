"""Training: config → data → process → model → objective (docs/design.md §5).

Every trainer is a `TrainingRun` (training/run.py: run directory, metrics, checkpoints,
resume, EMA, learning rate, non-finite policy) with its own step; `trainer_for` is the one
place that says which trainer a config selects."""

from __future__ import annotations

import os
from pathlib import Path

from phasediff.objectives.hamiltonian import HAMILTONIAN_SCORE_MATCHING
from phasediff.training.checkpoint import load_checkpoint, save_checkpoint
from phasediff.training.config import Config, load_config
from phasediff.training.errors import NonFiniteLossError
from phasediff.training.hamiltonian_sm import HamiltonianSMTrainer
from phasediff.training.run import TrainingRun
from phasediff.training.trainer import (
    Trainer,
    build_model,
    build_process,
    load_trained,
)

__all__ = [
    "Config",
    "HamiltonianSMTrainer",
    "NonFiniteLossError",
    "Trainer",
    "TrainingRun",
    "build_model",
    "build_process",
    "load_checkpoint",
    "load_config",
    "load_trained",
    "save_checkpoint",
    "train",
    "trainer_for",
]


def trainer_for(config: Config) -> type[TrainingRun]:
    """The trainer class `config` selects: `HamiltonianSMTrainer` for objective.name =
    "hamiltonian_score_matching" (a force and a velocity network, one process), `Trainer`
    (score and velocity models, DDP under torchrun) for every other objective."""
    if config.objective.name == HAMILTONIAN_SCORE_MATCHING:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise ValueError(
                "hamiltonian_score_matching trains in one process; run it without torchrun."
            )
        return HamiltonianSMTrainer
    return Trainer


def train(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train `config` into `run_dir` with the trainer it selects (the function behind
    `phasediff train`); returns the run's summary."""
    trainer = trainer_for(config)(config, run_dir, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        trainer.close()
