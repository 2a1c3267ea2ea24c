"""Training reuse: the models a suite compares are trained here, or resumed, or reused.

A contender is a config file plus ``--set`` overrides (``BenchModel``); its run lives in
``RUNS/SUITE/<model>_<steps>[_seed<seed>]``. A finished run is reused, an interrupted one
resumed, and a run trained with another config is refused. This is the only part of
``phasediff.bench`` that trains, and with ``runs.py`` the only one that imports
``phasediff.training`` (docs/design.md §9: evaluation never does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchModel", "config_path", "network_label", "prepare_model", "suite_config"]

# train.* keys that do not change what is learned (ignored when a stored run is reused)
_NEUTRAL_TRAIN_KEYS = ("threads", "tensorboard", "device", "log_every", "ckpt_every", "keep_last")


@dataclass(frozen=True)
class BenchModel:
    """One contender: a config file plus ``--set`` overrides (on top of the shared budget)."""

    key: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()


def config_path(config: str) -> Path:
    """A config file relative to the working directory, else the one shipped with phasediff
    (`phasediff.training.config.find_config`)."""
    from phasediff.training.config import find_config

    path = find_config(config)
    if not path.is_file():
        raise ValueError(
            f"config file {config!r} was found neither in {str(Path.cwd())!r} nor among the "
            "configs shipped with phasediff."
        )
    return path


def suite_config(spec: BenchModel, suite: str, steps: int | None, seed: int, threads: int):
    """The validated config of ``spec`` with the suite's budget, seed and thread count."""
    from phasediff.training import load_config

    overrides = [
        *spec.overrides,
        f"name='bench-{suite}-{spec.key}'",
        f"seed={seed}",
        f"train.threads={threads}",
        "train.tensorboard=false",
        "train.sample_every=0",
    ]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    return load_config(config_path(spec.config), overrides)


def _comparable(config: dict) -> dict:
    """A config as a dict with defaults filled in (a checkpoint written before a field was
    added still compares equal) and without the keys that do not change what is learned."""
    from phasediff.training.config import config_from_dict

    config = config_from_dict(config).model_dump()
    for key in _NEUTRAL_TRAIN_KEYS:
        config.get("train", {}).pop(key, None)
    config.get("train", {}).pop("steps", None)
    return config


def prepare_model(
    spec: BenchModel, config, run_dir: Path, progress: bool
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Train (or resume, or reuse) ``config`` in ``run_dir``; returns (EMA model, process,
    data, info) with info = {run_dir, trained_steps, train_seconds (this call), reused}."""
    from phasediff.training import Trainer, load_checkpoint, load_trained
    from phasediff.training.checkpoint import list_checkpoints

    steps = config.train.steps
    done = 0
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir() and list_checkpoints(ckpt_dir):
        meta, _ = load_checkpoint(run_dir)
        done = int(meta["step"])
        if _comparable(meta["config"]) != _comparable(config.model_dump()):
            raise ValueError(
                f"run {str(run_dir)!r} was trained with another config than {spec.config} "
                "with the bench settings; delete it or pass another --runs directory."
            )
        if done > steps:
            raise ValueError(
                f"run {str(run_dir)!r} holds step {done}, beyond --steps {steps}; "
                "pass another --runs directory."
            )
    seconds = 0.0
    if done < steps:
        trainer = Trainer(config, run_dir, resume=done > 0, progress=progress)
        seconds = float(trainer.fit()["seconds"])
        del trainer
    model, process, _, data = load_trained(run_dir)
    info = {
        "run_dir": str(run_dir),
        "trained_steps": steps,
        "train_seconds": round(seconds, 1),
        "reused": done == steps,
    }
    return model, process, data, info


def network_label(config) -> str:
    """The network of a config in a few words: "4×128 TimeMLP" or "U-Net (base …)"."""
    m = config.model
    if m.kind == "mlp":
        return f"{m.depth}×{m.hidden} TimeMLP"
    return f"U-Net (base {m.base}, mults {list(m.mults)})"
