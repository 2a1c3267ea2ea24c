"""The two-line Python API: ``phasediff.train`` / ``phasediff.load`` and the `TrainedRun`
they return (README, "Python"; docs/design.md §10).

    run = phasediff.load("runs/cld")     # or phasediff.train("configs/toy_cld.toml", out=...)
    samples = run.sample(2000)           # the recommended sampler of its model
    report = run.evaluate(samples)       # distances with their noise floors

The CLI's ``phasediff sample`` and ``phasediff eval`` are thin shells over the same calls:
`TrainedRun.sample` is what ``phasediff sample`` draws with, `TrainedRun.evaluate` is
``phasediff eval``'s `evaluate_model` on the loaded run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from phasediff.data.sanity import SampleCheck, check_samples, run_data_range
from phasediff.data.source import DataSource
from phasediff.processes import LinearProcess
from phasediff.samplers.base import Samples
from phasediff.samplers.final import final_step_options
from phasediff.samplers.registry import get_sampler, recommended_sampler, resolve
from phasediff.training.config import Config

__all__ = ["TrainedRun", "load", "train"]


@dataclass
class TrainedRun:
    """A trained run, loaded: `model` (EMA weights unless loaded with ``ema=False``, eval
    mode), its `process`, `config` and `data` (the `DataSource` it trained on), and `path`."""

    path: Path
    model: torch.nn.Module
    process: LinearProcess
    config: Config
    data: DataSource

    def sample(
        self,
        n: int,
        sampler: str | None = None,
        steps: int | None = None,
        *,
        grid: str | torch.Tensor | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        final: str | None = None,
        **options: Any,
    ) -> Samples:
        """``n`` samples with `sampler` (default: `recommended_sampler` of the model, e.g.
        ei1c for score models) at `steps` steps (default: the recommended count for
        that sampler) on `grid` (default: the sampler's own). ``x`` is in the data's own units
        (a standardised points run maps it back; ``z`` stays in the model's units). ``seed``
        seeds a fresh generator
        unless `generator` is given. ``final`` (default "denoise" for the fixed-step samplers
        of score models, "integrate" for dopri5 and velocity models): the last
        step jumps to the denoiser x̂₀, projected onto the training data's recorded range
        (``samples.projected`` counts the coordinates moved); "integrate" keeps the sampler's
        own last step (docs/samplers.md, "The final step"). Score models are sampled with the
        x̂₀ guard (``x0_guard=False`` turns it off): the denoiser of every network call is
        projected onto that range, and ``samples.guarded`` counts the samples it moved
        (docs/samplers.md, "The x̂₀ guard"). ``options`` go to the sampler
        (``progress=True``, ``callback``, ``return_trajectory``, ``corrector``, …;
        docs/samplers.md). Samples that
        are not finite or lie far outside the training data's range are counted in
        ``.sanity`` (`check`) and reported by one `SampleWarning`; they are kept."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer ≥ 1 (the number of samples), got {n!r}.")
        default_name, default_steps = recommended_sampler(self.model)
        name = default_name if sampler is None else sampler
        entry = resolve(name, self.model)
        if steps is None:
            steps = default_steps if name == default_name else 50
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}.")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        data_range, _ = run_data_range(self.path, self.data.data)
        samples = get_sampler(name)(  # the entry's own options (ei1c: order 1, corrector)
            self.model,
            self.process,
            (n, *self.data.data_shape),
            steps,
            grid=entry.default_grid if grid is None else grid,
            generator=generator,
            **final_step_options(
                final,
                self.model,
                options.pop("x0_range", (data_range.low, data_range.high)),
                adaptive=entry.adaptive,
                x0_guard=options.pop("x0_guard", None),
            ),
            **options,
        )
        # counted before any mapping back: the recorded range is in the model's units
        raw = samples.x if samples.unprojected is None else samples.unprojected
        samples.sanity = self.check(raw)  # before any x0_range projection: nothing is hidden
        samples.sanity.warn("they are kept (samples.sanity.ok is False for them)", stacklevel=2)
        if self.data.standardization is not None:  # back to the units of the user's file
            samples.x = self.data.standardization.decode(samples.x)
        return samples

    def check(self, x: torch.Tensor) -> SampleCheck:
        """Counts of the samples `x` (N, *data_shape), in the model's units, that are not
        finite or lie far outside the training data's range: the range recorded in the run
        (``data_range.json``), else that of its training set (`phasediff.data.sanity`)."""
        data_range, source = run_data_range(self.path, self.data.data)
        return check_samples(x, data_range, source=source)

    def evaluate(
        self,
        samples: Samples | torch.Tensor | str | Path | None = None,
        *,
        num: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        grid: str | None = None,
        seed: int = 0,
        out: str | Path | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The report of ``phasediff eval`` (docs/evaluation.md): distances to held-out data
        with their noise floors, written to ``out`` (default ``<run>/eval``) as metrics.json.

        `samples` is a `Samples`, a tensor of data-space samples, an .npz with ``x``, or None
        (then ``num`` samples, default 2000, are drawn with `sample`'s defaults or the given
        `sampler`/`steps`/`grid`). ``options``: ``nll``, ``nll_num``, ``nll_tol``,
        ``fid`` (Inception FID/KID/precision/recall with the ``phasediff[fid]`` extra),
        ``fid_num``, ``inception``, ``cache``, ``progress`` of `evaluate_model`."""
        from phasediff.evaluation.report import evaluate_model

        out_dir = Path(out) if out is not None else self._run_dir / "eval"
        report = {"run": str(self.path)}
        if isinstance(samples, Samples | torch.Tensor):
            x = samples.x if isinstance(samples, Samples) else samples
            if num is not None:
                x = x[:num]
            return evaluate_model(
                self.model, self.process, self.data, out=out_dir, samples=x.detach().float(),
                seed=seed, report=report, **options,
            )  # fmt: skip
        if samples is None:
            name, default_steps = recommended_sampler(self.model)
            name = name if sampler is None else sampler
            steps = steps if steps is not None else (default_steps if sampler is None else 50)
            grid = grid if grid is not None else resolve(name, self.model).default_grid
            options.update(sampler=name, steps=steps, grid=grid)
        options.setdefault("data_range", run_data_range(self.path, self.data.data)[0])
        return evaluate_model(
            self.model, self.process, self.data, out=out_dir, samples=samples, num=num,
            seed=seed, report=report, **options,
        )  # fmt: skip

    @property
    def _run_dir(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent


def load(
    run: str | Path, *, ema: bool = True, device: str = "cpu", allow_pickle: bool = False
) -> TrainedRun:
    """Load a run directory (its newest valid checkpoint) or one checkpoint file; the model
    carries the EMA weights unless ``ema=False`` (`phasediff.training.load_trained`)."""
    from phasediff.training import load_trained

    path = Path(run)
    if not path.exists():
        raise ValueError(f"run {str(path)!r} does not exist; pass a run directory or checkpoint.")
    model, process, config, data = load_trained(
        path, ema=ema, device=device, allow_pickle=allow_pickle
    )
    return TrainedRun(path=path, model=model, process=process, config=config, data=data)


def train(
    config: Config | str | Path | Mapping[str, Any],
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> TrainedRun:
    """Train `config` (a TOML path, a `Config`, or a dict with the TOML's structure) into the
    run directory `out` (``phasediff train CONFIG --out OUT``; ``overrides`` are its ``--set``
    strings, e.g. ``"train.steps=2000"``) and return the trained run, loaded with EMA weights."""
    from phasediff.training import train as _train
    from phasediff.training.config import apply_overrides, config_from_dict, load_config

    if isinstance(config, Config | Mapping):
        raw = config.model_dump() if isinstance(config, Config) else copy.deepcopy(dict(config))
        cfg = config_from_dict(apply_overrides(raw, list(overrides)))
    elif isinstance(config, str | Path):
        cfg = load_config(config, list(overrides))
    else:
        raise ValueError(
            f"config must be a TOML path, a Config or a dict, got {type(config).__name__}."
        )
    _train(cfg, out, resume=resume, progress=progress)
    return load(out)
