"""The trainer: config → data → process → model → objective, with exact resume (docs/design.md §5).

One `torch.Generator` drives every random draw of a step (data batch, times, noise), and its
state is checkpointed with the model, EMA and AdamW state, so a resumed run reproduces the
uninterrupted run's losses bit for bit (tested).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from phasediff.data import DataSource, get_data
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
from phasediff.processes import LinearProcess, get_process
from phasediff.training.checkpoint import (
    atomic_write_bytes,
    decode_state,
    encode_state,
    list_checkpoints,
    load_checkpoint,
    process_mismatch,
    save_checkpoint,
    split_prefix,
    state_dict_mismatch,
)
from phasediff.training.config import Config, config_from_dict
from phasediff.training.distributed import Execution, setup_distributed, teardown_distributed
from phasediff.training.errors import NonFiniteLossError

CSV_FIELDS = ["step", "loss", "lr", "grad_norm", "seconds", "skipped"]


def build_process(config: Config) -> LinearProcess:
    return get_process(config.process.preset, **config.process.params)


def build_data(config: Config) -> DataSource:
    """The config's dataset; a missing or unreadable dataset file is one ValueError sentence."""
    try:
        dc = config.data
        return get_data(
            dc.name,
            n_train=dc.n_train,
            seed=config.seed,
            path=dc.path,
            image_size=dc.image_size,
            channels=dc.channels,
            hflip=dc.hflip,
        )
    except (OSError, EOFError) as exc:
        where = getattr(exc, "filename", None)
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(
            f"dataset {config.data.name!r} could not be read ({reason}"
            f"{f': {where}' if where else ''}); check that its files exist and are intact."
        ) from None


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


class Trainer:
    """Train a score model for `config` in `run_dir` (created if needed).

    resume=True continues from the newest valid checkpoint in run_dir; otherwise run_dir must
    not already hold checkpoints (nothing is overwritten).
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        # under torchrun: join the process group (docs/images.md); rank 0 of 1 otherwise
        self.dist = setup_distributed(tc.device)
        self.device = self.dist.device or _device(tc.device)
        has_ckpt = self.ckpt_dir.is_dir() and bool(list_checkpoints(self.ckpt_dir))
        if has_ckpt and not resume:
            raise ValueError(
                f"run directory {str(self.run_dir)!r} already holds checkpoints; pass --resume "
                f"to continue it or choose another --out."
            )
        if resume and not has_ckpt:
            raise ValueError(f"--resume was given but {str(self.run_dir)!r} holds no checkpoint.")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.dist.is_main:  # only rank 0 writes
                probe = self.run_dir / ".write_test"
                probe.write_text("ok")
                probe.unlink()
        except OSError as exc:
            raise ValueError(
                f"cannot write to run directory {str(self.run_dir)!r} ({exc.strerror})."
            ) from None

        torch.manual_seed(config.seed)
        self.process = build_process(config)
        self.data = build_data(config)
        self.model = build_model(config, self.process, self.data).to(self.device)
        # DDP, autocast, channels-last, torch.compile, fp16 loss scaling (distributed.py)
        self.execution = Execution(self.model, tc, self.device, self.dist)
        self.objective = get_objective(config.objective.name)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=tc.lr,
            betas=tc.betas,
            weight_decay=tc.weight_decay,
            foreach=True,
        )
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed + 1)
        self.step = 0
        self.skipped = 0  # non-finite batches skipped so far (train.skip_nonfinite)
        self.losses: list[float] = []
        if resume:
            self._restore(load_checkpoint(self.ckpt_dir))
        self.dist.seed_local_rng(config.seed, self.step)  # per-rank dropout RNG (DDP only)
        if self.dist.is_main:
            config_text = json.dumps(config.model_dump(), indent=1).encode()
            atomic_write_bytes(self.run_dir / "config.json", config_text)

    # ----------------------------------------------------------------- one step
    def lr_at(self, step: int) -> float:
        tc = self.config.train
        scale = min(1.0, step / tc.warmup) if tc.warmup else 1.0
        if tc.lr_decay == "cosine" and step > tc.warmup:
            span = max(tc.steps - tc.warmup, 1)
            done = min(1.0, (step - tc.warmup) / span)
            scale = tc.lr_min_ratio + (1 - tc.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * done))
        return tc.lr * scale

    def train_step(self) -> tuple[float, float]:
        """One optimisation step; returns (loss, gradient norm before clipping).

        A non-finite loss or gradient raises NonFiniteLossError naming the step and the tensor
        ("loss", or the first parameter whose gradient is non-finite) before anything is
        updated. While at most `train.skip_nonfinite` such batches have been met, the batch is
        skipped instead: the step counter advances (the batch is consumed) but the weights,
        EMA and AdamW state are untouched, `self.skipped` grows and (nan, nan) is returned."""
        tc = self.config.train
        step = self.step + 1
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0 = self.data.batch(tc.batch_size, self.generator).to(self.device)
        # the global batch on every rank; the network runs on this rank's shard (distributed.py)
        loss, value = self.execution.loss(
            self.objective, self.process, x0, self.generator, self.config.objective.weighting
        )
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value):
            return self._non_finite(step, "loss")
        self.execution.backward(loss)
        self.execution.unscale(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm(grads)
        grad_norm = float(total_norm)
        if not math.isfinite(grad_norm):
            if self.execution.overflow(self.optimizer):  # fp16: the scaler skips and backs off
                self.step = step
                return value, grad_norm
            return self._non_finite(step, self._non_finite_gradient())
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, tc.grad_clip, total_norm)
        self.execution.step(self.optimizer)
        torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - tc.ema_decay)
        self.step = step
        return value, grad_norm

    def _non_finite_gradient(self) -> str:
        for name, p in self.model.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return f"gradient of {name!r}"
        return "gradient norm"

    def _non_finite(self, step: int, tensor: str) -> tuple[float, float]:
        """Skip the batch of `step` (see train_step) or raise NonFiniteLossError."""
        self.optimizer.zero_grad(set_to_none=True)
        allowed = self.config.train.skip_nonfinite
        if self.skipped >= allowed:
            kept = list_checkpoints(self.ckpt_dir) if self.ckpt_dir.is_dir() else []
            outcome = (
                f"the last good checkpoint {str(kept[-1])!r} is kept"
                if kept
                else "no checkpoint had been written yet"
            )
            budget = (
                f" after skipping {self.skipped} bad batches (--skip-nonfinite {allowed})"
                if allowed
                else ""
            )
            raise NonFiniteLossError(
                f"non-finite {tensor} at step {step}{budget}; training stopped and {outcome}.",
                step=step,
                tensor=tensor,
            )
        self.skipped += 1
        self.step = step
        from tqdm import tqdm

        tqdm.write(
            f"warning: skipped the batch of step {step} (non-finite {tensor}); "
            f"{self.skipped} of {allowed} allowed skips used.",
            file=sys.stderr,
        )
        return math.nan, math.nan

    # ----------------------------------------------------------------- the loop
    def fit(self, steps: int | None = None) -> dict:
        """Train until `steps` (default config.train.steps); returns a summary dict."""
        from tqdm import tqdm

        tc = self.config.train
        target = tc.steps if steps is None else steps
        csv_path = self.run_dir / "metrics.csv"
        main = self.dist.is_main  # only rank 0 writes logs, checkpoints and images
        if main:
            _truncate_csv(csv_path, self.step)
        new_file = not csv_path.exists()
        writer_tb = _tensorboard(self.run_dir) if tc.tensorboard and main else None
        t_start = time.perf_counter()
        window: list[float] = []
        bar = tqdm(
            total=target,
            initial=self.step,
            disable=not self.progress or not main,
            desc=self.config.name,
            dynamic_ncols=True,
        )
        with open(csv_path, "a", newline="") if main else io.StringIO() as fh:
            writer = csv.writer(fh)
            if new_file:
                writer.writerow(CSV_FIELDS)
            while self.step < target:
                skipped_before = self.skipped
                loss, grad_norm = self.train_step()
                if self.skipped == skipped_before:  # skipped batches log no loss
                    self.losses.append(loss)
                    window.append(loss)
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == target:
                    mean = sum(window) / len(window) if window else math.nan
                    window.clear()
                    elapsed = time.perf_counter() - t_start
                    row = [self.step, f"{mean:.6g}", f"{self.lr_at(self.step):.6g}"]
                    writer.writerow([*row, f"{grad_norm:.4g}", f"{elapsed:.2f}", str(self.skipped)])
                    fh.flush()
                    bar.set_postfix(loss=f"{mean:.4f}")
                    if writer_tb is not None:
                        writer_tb.add_scalar("loss", mean, self.step)
                        writer_tb.add_scalar("lr", self.lr_at(self.step), self.step)
                if self.step % tc.ckpt_every == 0 or self.step == target:
                    self.save()
                if tc.sample_every and main and self.step % tc.sample_every == 0:
                    self.sample_image(self.run_dir / "samples" / f"step_{self.step:08d}.png")
        bar.close()
        self.dist.barrier()
        if writer_tb is not None:
            writer_tb.close()
        return {
            "step": self.step,
            "final_loss": self.losses[-1] if self.losses else math.nan,
            "seconds": time.perf_counter() - t_start,
            "skipped_nonfinite": self.skipped,
            "parameters": count_parameters(self.model),
            "run_dir": str(self.run_dir),
        }

    # ----------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{n}": e for n, e in zip(names, self.ema, strict=True)})
        for idx, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
        return tensors

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0 only; other ranks return None)."""
        if not self.dist.is_main:
            return None
        groups = [
            {k: v for k, v in g.items() if k != "params"}
            for g in self.optimizer.state_dict()["param_groups"]
        ]
        meta = {
            "config": self.config.model_dump(),
            "optimizer": {"param_groups": groups},
            "generator_state": encode_state(self.generator.get_state()),
            "torch_rng_state": encode_state(torch.get_rng_state()),
            "process": self.process.describe(),
            "parameterization": self.config.model.parameterization,
            "skipped_nonfinite": self.skipped,
            **self.execution.state(),
        }
        return save_checkpoint(
            self.ckpt_dir, self.step, self.state_tensors(), meta, self.config.train.keep_last
        )

    def _restore(self, loaded: tuple[dict, dict[str, torch.Tensor]]) -> None:
        meta, tensors = loaded
        saved = config_from_dict(meta["config"])
        mismatch = _architecture_mismatch(saved, self.config)
        if mismatch:
            raise ValueError(
                f"the checkpoint in {str(self.ckpt_dir)!r} was trained with a different "
                f"{mismatch}; resume with the same config."
            )
        _check_process(meta, self.process, self.ckpt_dir)
        weights = split_prefix(tensors, "model")
        problem = state_dict_mismatch(self.model, weights)
        if problem:
            raise ValueError(f"cannot resume from {str(self.ckpt_dir)!r}: {problem}.")
        try:
            self.model.load_state_dict(weights)
            names = [n for n, p in self.model.named_parameters() if p.requires_grad]
            ema = split_prefix(tensors, "ema")
            self.ema = [ema[n].to(self.device).clone() for n in names]
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in split_prefix(tensors, "optim").items():
                idx, name = key.split(".", 1)
                state.setdefault(int(idx), {})[name] = value
            groups = meta["optimizer"]["param_groups"]
            current_groups = self.optimizer.state_dict()["param_groups"]
            for g, current in zip(groups, current_groups, strict=True):
                g["params"] = current["params"]
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})
            self.generator.set_state(decode_state(meta["generator_state"]))
            torch.set_rng_state(decode_state(meta["torch_rng_state"]))
            self.execution.load_state(meta)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"the checkpoint in {str(self.ckpt_dir)!r} cannot be resumed from: its "
                f"training state is incomplete ({type(exc).__name__}: {exc})."
            ) from None
        self.step = int(meta["step"])
        self.skipped = int(meta.get("skipped_nonfinite", 0))

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


def _architecture_mismatch(a: Config, b: Config) -> str | None:
    for section in ("process", "model", "data"):
        if section == "data":  # a dataset moved to another folder is still the same data
            if a.data.model_copy(update={"path": None}) != b.data.model_copy(update={"path": None}):
                return "data section"
        elif getattr(a, section) != getattr(b, section):
            return f"{section} section"
    return None


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device {name!r} is not a device; use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'cpu'.")
    return device


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a run killed after its last checkpoint)."""
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):  # a row cut short by a kill
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        path.unlink()
        return
    header, body = rows[0], rows[1:]
    if len(header) < len(CSV_FIELDS) and header == CSV_FIELDS[: len(header)]:
        # a log begun before the last columns existed: pad its rows (e.g. skipped = 0)
        body = [
            r + ["0"] * (len(CSV_FIELDS) - len(r)) if len(r) == len(header) else r for r in body
        ]
        header = CSV_FIELDS
    kept = [header] + [
        r for r in body if len(r) == len(header) and r[0].isdigit() and int(r[0]) <= step
    ]
    out = io.StringIO(newline="")
    csv.writer(out).writerows(kept)
    atomic_write_bytes(path, out.getvalue().encode())  # a kill here keeps the old log


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a pinned dependency; tolerate its absence anyway
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def train(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train `config` into `run_dir` (the function behind `phasediff train`)."""
    if config.objective.name == HAMILTONIAN_SCORE_MATCHING:  # its own loop (two networks)
        from phasediff.training.hamiltonian_sm import train_hsm

        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise ValueError(
                "hamiltonian_score_matching trains in one process; run it without torchrun."
            )
        return train_hsm(config, run_dir, resume=resume, progress=progress)
    trainer = Trainer(config, run_dir, resume=resume, progress=progress)
    try:
        return trainer.fit()
    finally:
        teardown_distributed(trainer.dist)


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
