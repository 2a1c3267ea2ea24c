"""The trainer: config → data → process → model → objective, with exact resume (docs/design.md §5).

One `torch.Generator` drives every random draw of a step (data batch, times, noise), and its
state is checkpointed with the model, EMA and AdamW state, so a resumed run reproduces the
uninterrupted run's losses bit for bit (tested).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from phasediff.data import DataSource, get_data
from phasediff.data.points import PointsStandardization
from phasediff.data.sanity import write_data_range
from phasediff.models import TimeMLP, UNet, count_parameters
from phasediff.objectives import Preconditioned, get_objective
from phasediff.objectives.hamiltonian import (
    HAMILTONIAN_SCORE_MATCHING,
    VELOCITY,
    VELOCITY_OBJECTIVES,
    X0_PREDICTION,
    VelocityFromDenoiser,
    check_velocity_process,
    is_velocity_model,
)
from phasediff.objectives.preconditioning import NoiseLevelDensity
from phasediff.processes import LinearProcess, get_process
from phasediff.training.checkpoint import (
    load_checkpoint,
    process_mismatch,
    split_prefix,
    state_dict_mismatch,
)
from phasediff.training.config import Config, config_from_dict
from phasediff.training.distributed import Execution, setup_distributed, teardown_distributed
from phasediff.training.errors import NonFiniteLossError
from phasediff.training.run import (
    TrainingRun,
    first_non_finite_gradient,
    metrics_fields,
    truncate_metrics,
)

__all__ = [
    "CSV_FIELDS",
    "NonFiniteLossError",
    "Trainer",
    "build_data",
    "build_model",
    "build_process",
    "data_rms",
    "load_trained",
]

CSV_FIELDS = metrics_fields(("loss",))  # step, loss, lr, grad_norm, seconds, skipped


def build_process(config: Config) -> LinearProcess:
    return get_process(config.process.preset, **config.process.params)


def build_data(config: Config) -> DataSource:
    """The config's dataset; a missing or unreadable dataset file is one ValueError sentence."""
    try:
        dc = config.data
        recorded = None
        if dc.mean is not None:  # the standardisation a run recorded (points data)
            recorded = PointsStandardization(
                torch.tensor(dc.mean, dtype=torch.float64),
                torch.tensor(dc.std, dtype=torch.float64),
            )
        return get_data(
            dc.name,
            n_train=dc.n_train,
            seed=config.seed,
            path=dc.path,
            image_size=dc.image_size,
            channels=dc.channels,
            hflip=dc.hflip,
            key=dc.key,
            held_out_fraction=dc.held_out_fraction,
            standardize=dc.standardize,
            standardization=recorded,
        )
    except (OSError, EOFError) as exc:
        where = getattr(exc, "filename", None)
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(
            f"dataset {config.data.name!r} could not be read ({reason}"
            f"{f': {where}' if where else ''}); check that its files exist and are intact."
        ) from None


def record_data_statistics(config: Config, data: DataSource) -> Config:
    """`config` with the data's standardisation written into data.mean/data.std (when the data
    has one and the config does not yet), so that the run's config.json and checkpoints carry
    it and a reloaded run maps samples back with the same numbers."""
    standardization = data.standardization
    if standardization is None or config.data.mean is not None:
        return config
    data_config = config.data.model_copy(
        update={"mean": standardization.mean.tolist(), "std": standardization.std.tolist()}
    )
    return config.model_copy(update={"data": data_config})


def build_model(config: Config, process: LinearProcess, data: DataSource) -> torch.nn.Module:
    """The network named by config.model for this process and data (a position-only velocity
    network for the "velocity" objective, docs/hgf.md)."""
    velocity = _velocity_network(config, process)  # HGF: position in, velocity out
    k_in, n_out = (1, 1) if velocity else (process.k, len(process.noisy_blocks))
    if n_out == 0:
        raise ValueError(
            f"process '{process.name}' has no noisy blocks; score models cannot be trained on it "
            f"(train a velocity model with objective.name = 'velocity')."
        )
    x0 = config.model.parameterization == X0_PREDICTION
    if x0 and not velocity:
        raise ValueError(
            "model.parameterization 'x0' is for velocity models (objective.name = 'velocity'); "
            "score models use 'eps' or 'score'."
        )
    mc = config.model
    if mc.precondition:
        if velocity:
            raise ValueError(
                "model.precondition is for score models; velocity models use "
                "model.parameterization = 'x0' (docs/hgf.md)."
            )
        if mc.parameterization != "eps":
            raise ValueError(
                "model.precondition = true needs model.parameterization = 'eps' (the "
                f"preconditioned model returns ε), got {mc.parameterization!r}."
            )
        net = _build_network(config, process, data, k_in, 1)  # one block: the x₀ residual
        sigma = mc.sigma_data if mc.sigma_data is not None else data_rms(data)
        return Preconditioned(net, process, sigma, time_feature=mc.time_feature, input_scaling=True)
    net = _build_network(config, process, data, k_in, n_out)
    if x0:
        return VelocityFromDenoiser(net, process)
    if velocity:
        net.parameterization = VELOCITY
    return net


def build_objective(config: Config, process: LinearProcess, model: torch.nn.Module):
    """The config's objective, with its training-time density bound (docs/objectives.md)."""
    objective = get_objective(config.objective.name)
    oc = config.objective
    if oc.time_density == "uniform":
        return objective
    if not isinstance(model, Preconditioned):
        raise ValueError(
            "objective.time_density 'edm' needs a preconditioned model (model.precondition = "
            "true): its noise levels are measured against the model's σ_data."
        )
    density = NoiseLevelDensity(process, model.sigma_data, oc.p_mean, oc.p_std, oc.p_uniform)
    return functools.partial(objective, time_sampler=density)


def data_rms(data: DataSource) -> float:
    """σ of the Gaussian reference of a preconditioned model: the RMS of the training set
    about 0 (the processes' prior is centred), computed in float64 (deterministic)."""
    rms = float(data.data.to(torch.float64).pow(2).mean().sqrt())
    if not math.isfinite(rms) or rms <= 0:
        raise ValueError(
            f"dataset {data.name!r} has RMS {rms}; set model.sigma_data to a number > 0."
        )
    return rms


def _velocity_network(config: Config, process: LinearProcess) -> bool:
    """True when the objective trains a position-only velocity model (docs/hgf.md)."""
    if config.objective.name == HAMILTONIAN_SCORE_MATCHING:
        raise ValueError(
            "a hamiltonian_score_matching run holds a force and a velocity network; load it with "
            "phasediff.training.hamiltonian_sm.load_force."
        )
    if config.objective.name not in VELOCITY_OBJECTIVES:
        return False
    check_velocity_process(process)
    return True


def _build_network(
    config: Config, process: LinearProcess, data: DataSource, k_in: int, n_out: int
) -> torch.nn.Module:
    mc = config.model
    label = "eps" if mc.parameterization == X0_PREDICTION else mc.parameterization
    if mc.kind == "mlp":
        if len(data.data_shape) != 1:
            raise ValueError(
                f"model.kind 'mlp' needs vector data, but dataset {data.name!r} has shape "
                f"{data.data_shape}; use model.kind = 'unet'."
            )
        return TimeMLP(
            k_in,
            data.data_shape[0],
            n_out,
            hidden=mc.hidden,
            depth=mc.depth,
            time_dim=mc.time_dim,
            t_scale=process.T,
            parameterization=label,
            fourier_features=mc.fourier_features,
            fourier_scale=mc.fourier_scale,
            fourier_seed=config.seed,
            init=mc.init,
            residual=mc.residual,
        )
    if len(data.data_shape) != 3:
        raise ValueError(
            f"model.kind 'unet' needs image data (C, H, W), but dataset {data.name!r} has shape "
            f"{data.data_shape}; use model.kind = 'mlp'."
        )
    return UNet(
        k_in,
        data.data_shape[0],
        n_out,
        base=mc.base,
        mults=tuple(mc.mults),
        num_res_blocks=mc.num_res_blocks,
        time_dim=mc.time_dim,
        dropout=mc.dropout,
        t_scale=process.T,
        parameterization=label,
    )


class Trainer(TrainingRun):
    """Train a score model for `config` in `run_dir` (created if needed).

    resume=True continues from the newest valid checkpoint in run_dir; otherwise run_dir must
    not already hold checkpoints (nothing is overwritten). The run plumbing (run directory,
    metrics.csv, checkpoints, EMA, learning rate, non-finite policy) is `TrainingRun`'s.
    """

    averaged = ("loss",)
    resume_sections = ("process", "model", "data")

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        # under torchrun: join the process group (docs/images.md); rank 0 of 1 otherwise
        self.dist = setup_distributed(tc.device)
        device = self.dist.device or _device(tc.device)
        super().__init__(
            config,
            run_dir,
            resume=resume,
            progress=progress,
            is_main=self.dist.is_main,
            device=device,
        )
        self.process = build_process(config)
        self.data = build_data(config)
        if self.is_main:  # the range samples are checked against (phasediff.data.sanity)
            write_data_range(self.run_dir, self.data.data)
        self.config = config = record_data_statistics(config, self.data)
        self.model = build_model(config, self.process, self.data).to(self.device)
        # DDP, autocast, channels-last, torch.compile, fp16 loss scaling (distributed.py)
        self.execution = Execution(self.model, tc, self.device, self.dist)
        self.objective = build_objective(config, self.process, self.model)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.track_ema(named)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=tc.lr,
            betas=tc.betas,
            weight_decay=tc.weight_decay,
            # the fused kernel: 0.15 ms a step for the 4×128 MLP against 0.44 ms for foreach
            # (docs/benchmarks.md, "Training step")
            **({"fused": True} if self.device.type in ("cpu", "cuda") else {"foreach": True}),
        )
        self.losses: list[float] = []
        self.begin()

    def after_restore_hook(self) -> None:
        self.dist.seed_local_rng(self.config.seed, self.step)  # per-rank dropout RNG (DDP only)

    # ----------------------------------------------------------------- one step
    def train_step(self) -> tuple[float, float]:
        """One optimisation step; returns (loss, gradient norm before clipping).

        A non-finite loss or gradient raises NonFiniteLossError naming the step and the tensor
        ("loss", or the first parameter whose gradient is non-finite) before anything is
        updated. While at most `train.skip_nonfinite` such batches have been met, the batch is
        skipped instead: the step counter advances (the batch is consumed) but the weights,
        EMA and AdamW state are untouched, `self.skipped` grows and (nan, nan) is returned."""
        tc = self.config.train
        step = self.step + 1
        self.set_lr(self.optimizer, step)
        x0 = self.data.batch(tc.batch_size, self.generator).to(self.device)
        # the global batch on every rank; the network runs on this rank's shard (distributed.py)
        loss, value = self.execution.loss(
            self.objective, self.process, x0, self.generator, self.config.objective.weighting
        )
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value):
            return self.skip_or_stop(step, "loss")
        self.execution.backward(loss)
        self.execution.unscale(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm(grads)
        grad_norm = float(total_norm)
        if not math.isfinite(grad_norm):
            if self.execution.overflow(self.optimizer):  # fp16: the scaler skips and backs off
                self.step = step
                return value, grad_norm
            return self.skip_or_stop(step, first_non_finite_gradient(self.model.named_parameters()))
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, tc.grad_clip, total_norm)
        self.execution.step(self.optimizer)
        self.update_ema()
        self.step = step
        return value, grad_norm

    # ----------------------------------------------------------------- run hooks
    def record(self, values: tuple[float, ...]) -> None:
        self.losses.append(values[0])

    def final_metrics(self) -> dict:
        return {"final_loss": self.losses[-1] if self.losses else math.nan}

    def parameter_count(self) -> int:
        return count_parameters(self.model)

    def after_step(self) -> None:
        tc = self.config.train
        if tc.sample_every and self.is_main and self.step % tc.sample_every == 0:
            self.sample_image(self.run_dir / "samples" / f"step_{self.step:08d}.png")

    def end_fit(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        teardown_distributed(self.dist)

    def optimizers(self) -> list[tuple[str, str, torch.optim.Optimizer]]:
        return [("optim", "optimizer", self.optimizer)]

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v for k, v in self.model.state_dict().items()}

    def checkpoint_meta(self) -> dict:
        return {
            "process": self.process.describe(),
            "parameterization": self.config.model.parameterization,
            **self.execution.state(),
        }

    def check_checkpoint(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        _check_process(meta, self.process, self.ckpt_dir)
        problem = state_dict_mismatch(self.model, split_prefix(tensors, "model"))
        if problem:
            raise ValueError(f"cannot resume from {str(self.ckpt_dir)!r}: {problem}.")

    def load_model_tensors(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(split_prefix(tensors, "model"))

    def after_restore(self, meta: dict) -> None:
        self.execution.load_state(meta)

    # ----------------------------------------------------------------- samples
    def ema_model(self) -> torch.nn.Module:
        """A copy of the network carrying the EMA weights."""
        import copy

        model = copy.deepcopy(self.model)
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            torch._foreach_copy_(params, self.ema)
        return model.eval()

    def sample_image(self, path: Path) -> Path:
        """Sample the EMA model with Euler–Maruyama (velocity models: Euler on dx/dt = V) and
        save a picture (scatter or grid)."""
        from phasediff.samplers import euler_maruyama, hgf_euler
        from phasediff.training.plots import save_samples

        tc = self.config.train
        gen = torch.Generator().manual_seed(self.config.seed + 2)
        shape = (tc.sample_num, *self.data.data_shape)
        sampler = hgf_euler if is_velocity_model(self.model) else euler_maruyama
        samples = sampler(self.ema_model(), self.process, shape, tc.sample_steps, generator=gen)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(
            samples.x, path, reference=self.data.held_out(tc.sample_num), title=f"step {self.step}"
        )
        return path


def _check_process(meta: dict, process: LinearProcess, where: str | Path) -> None:
    """Refuse a checkpoint whose stored process matrices differ from the rebuilt process
    (e.g. a preset default changed since it was trained)."""
    saved = meta.get("process")
    if not isinstance(saved, dict):
        return  # older or imported checkpoints carry no description
    difference = process_mismatch(saved, process.describe())
    if difference:
        raise ValueError(
            f"the checkpoint in {str(where)!r} was trained with a different process than "
            f"preset {process.name!r} builds now ({difference}); pin the old values in "
            f"process.params or retrain."
        )


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device {name!r} is not a device; use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'cpu'.")
    return device


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows of the score trainer's metrics.csv logged after `step` (`truncate_metrics`)."""
    truncate_metrics(path, step, CSV_FIELDS)


def load_trained(
    path: str | Path, *, ema: bool = True, device: str = "cpu", allow_pickle: bool = False
) -> tuple[torch.nn.Module, LinearProcess, Config, DataSource]:
    """(model, process, config, data) from a run directory or checkpoint file.

    The model carries the EMA weights unless ema=False, is in eval mode, and was rebuilt from
    the checkpoint's own config (no code is unpickled). The process rebuilt from that config
    must match the matrices stored in the checkpoint. A pickled `.pt` file is refused unless
    allow_pickle=True (then read with torch.load(weights_only=True); layout in
    docs/reliability.md)."""
    meta, tensors = load_checkpoint(path, allow_pickle=allow_pickle)
    try:
        config = config_from_dict(meta["config"])
    except ValueError as exc:
        raise ValueError(f"checkpoint {str(path)!r} holds an invalid config: {exc}") from None
    process = build_process(config)
    _check_process(meta, process, path)
    data = build_data(config)
    model = build_model(config, process, data)
    weights = split_prefix(tensors, "model")
    problem = state_dict_mismatch(model, weights)
    if problem:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit the network its config describes: {problem}."
        )
    model.load_state_dict(weights)
    if ema:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        ema_t = split_prefix(tensors, "ema")
        missing = [n for n in names if n not in ema_t]
        if missing:
            raise ValueError(f"checkpoint has no EMA weights for {missing[0]!r}; use ema=False.")
        shapes = dict(model.named_parameters())
        wrong = [n for n in names if ema_t[n].shape != shapes[n].shape]
        if wrong:
            raise ValueError(
                f"checkpoint EMA weight {wrong[0]!r} has shape {tuple(ema_t[wrong[0]].shape)}, "
                f"not {tuple(shapes[wrong[0]].shape)}; use ema=False."
            )
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(ema_t[n])
    return model.to(device).eval(), process, config, data
