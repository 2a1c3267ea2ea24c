"""Hamiltonian score matching (HSM): learn a score F_θ without noise by alternating a
velocity-predictor step and a force step (Holderrieth et al. 2024; docs/design.md §3; docs/hgf.md).

Each iteration draws x₀ ~ data, v₀ ~ N(0, I), simulates x' = v, v' = F_θ(x) by leapfrog on
[0, T] (`hsm.leapfrog_steps` steps) and then

1. φ step (`hsm.velocity_steps` times, fresh trajectories each, no gradient to θ): minimise
   E‖φ(x_t, t) − v_t‖², so φ → φ*_t(x) = E[v_t | x_t = x];
2. θ step: minimise T·E[2 φ(x_t, t)·v_t − ‖φ(x_t, t)‖²] with φ frozen, differentiated through
   the simulated trajectory. At φ = φ* this value is the Hamiltonian score discrepancy
   HSD(θ) = ∫ E‖φ*_t‖² dt and its θ-gradient is ∇HSD (envelope theorem), so θ descends HSD,
   which is zero iff F_θ = ∇log p_data.

The loop is resumable bit for bit: both networks, the force EMA, both AdamW states and the
generator are checkpointed in the atomic safetensors + JSON format of `checkpoint.py`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from phasediff.data import DataSource, get_data
from phasediff.models import TimeMLP, count_parameters
from phasediff.objectives.hamiltonian import (
    VELOCITY,
    discrepancy_bound,
    simulate_phase_space,
    velocity_predictor_loss,
)
from phasediff.training.checkpoint import (
    decode_state,
    encode_state,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
)
from phasediff.training.config import Config, config_from_dict
from phasediff.training.errors import NonFiniteLossError

CSV_FIELDS = ["step", "velocity_loss", "discrepancy", "lr", "grad_norm", "seconds"]


class ForceField(nn.Module):
    """F_θ(x): an MLP R^d → R^d with SiLU (`depth` hidden layers of width `hidden`), no time
    input — the candidate score ∇log p(x) of Hamiltonian score matching. Input and output are
    (B, d)."""

    parameterization = "score"

    def __init__(self, data_dim: int, *, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        for value, name in ((data_dim, "data_dim"), (hidden, "hidden"), (depth, "depth")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}.")
        self.data_dim = data_dim
        layers: list[nn.Module] = [nn.Linear(data_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.data_dim:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.data_dim}), got {got}.")
        return self.net(x)


def velocity_predictor(data_dim: int, horizon: float, *, hidden=128, depth=3, time_dim=32):
    """φ(x_t, t): a TimeMLP on the position block only, parameterization "velocity"."""
    net = TimeMLP(1, data_dim, 1, hidden=hidden, depth=depth, time_dim=time_dim, t_scale=horizon)
    net.parameterization = VELOCITY
    return net


def fit_velocity(
    force,
    velocity: nn.Module,
    optimizer: torch.optim.Optimizer,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    horizon: float,
    steps: int,
) -> float:
    """One φ step on fresh trajectories of x' = v, v' = F(x) (no gradient to F)."""
    with torch.no_grad():
        x_t, v_t, t = simulate_phase_space(force, x0, horizon, steps, generator)
    loss = velocity_predictor_loss(velocity, x_t, v_t, t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def discrepancy_loss(
    force,
    velocity: nn.Module,
    x0: torch.Tensor,
    generator: torch.Generator | None,
    horizon: float,
    steps: int,
) -> torch.Tensor:
    """The θ loss T·E[2φ·v_t − ‖φ‖²] on fresh trajectories, differentiable in F only."""
    x_t, v_t, t = simulate_phase_space(force, x0, horizon, steps, generator)
    flags = [p.requires_grad for p in velocity.parameters()]
    for p in velocity.parameters():
        p.requires_grad_(False)
    try:
        return discrepancy_bound(velocity, x_t, v_t, t, horizon)
    finally:
        for p, flag in zip(velocity.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def estimate_discrepancy(
    force,
    sample_data,
    *,
    horizon: float = 1.0,
    steps: int = 10,
    fit_iters: int = 300,
    batch_size: int = 256,
    eval_size: int = 8192,
    hidden: int = 64,
    depth: int = 3,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Monte-Carlo Hamiltonian score discrepancy of a fixed force field, eq. (2).

    Fits a fresh φ for `fit_iters` steps on trajectories from `sample_data(n, generator)`, then
    evaluates T·E[2φ·v_t − ‖φ‖²] on `eval_size` independent trajectories (cross-fitting): an
    estimate of the variational lower bound of HSD that is unbiased for the fitted φ, ≈ 0 (or
    slightly negative) for the true score. Returns {"hsd", "stderr", "velocity_loss"}.
    """
    gen = torch.Generator().manual_seed(seed)
    x_probe = sample_data(2, gen)
    d = x_probe.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        phi = velocity_predictor(d, horizon, hidden=hidden, depth=depth)
    opt = torch.optim.Adam(phi.parameters(), lr=lr)
    loss = math.nan
    for _ in range(fit_iters):
        loss = fit_velocity(force, phi, opt, sample_data(batch_size, gen), gen, horizon, steps)
    with torch.no_grad():
        x_t, v_t, t = simulate_phase_space(force, sample_data(eval_size, gen), horizon, steps, gen)
        out = phi(x_t, t.to(x_t.dtype))
        per = (2.0 * out * v_t - out.pow(2)).reshape(steps, eval_size, -1).sum(-1).mean(0)
    per = horizon * per
    return {
        "hsd": float(per.mean()),
        "stderr": float(per.std() / math.sqrt(eval_size)),
        "velocity_loss": loss,
    }


def relative_score_distance(
    force, true_score, points: torch.Tensor, weights: torch.Tensor | None = None
) -> float:
    """Σ_i w_i ‖F(x_i) − s(x_i)‖² / Σ_i w_i ‖s(x_i)‖² over `points` (e.g. a grid weighted by the
    data density): 1 for F = 0, 0 for F = s."""
    with torch.no_grad():
        s = true_score(points)
        err = (force(points) - s).pow(2).sum(1)
        ref = s.pow(2).sum(1)
        w = torch.ones_like(ref) if weights is None else weights.to(ref)
        return float((w * err).sum() / (w * ref).sum())


# ------------------------------------------------------------------------------ trainer
class HSMTrainer:
    """Train a force field F_θ by Hamiltonian score matching for `config` in `run_dir`.

    Uses config.data (vector data), config.model (hidden, depth, time_dim for both networks),
    config.train (steps, batch_size, lr and warmup for θ, grad_clip, ema_decay, logging,
    checkpoints, threads) and config.hsm (horizon, leapfrog_steps, velocity_steps,
    velocity_lr). resume=True continues from the newest valid checkpoint.
    """

    def __init__(
        self, config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        tc, hc, mc = config.train, config.hsm, config.model
        if tc.threads:
            torch.set_num_threads(tc.threads)
        if tc.device != "cpu":
            raise ValueError(
                f"Hamiltonian score matching runs on the CPU (toy data); got train.device "
                f"{tc.device!r}, use 'cpu'."
            )
        if mc.kind != "mlp":
            raise ValueError(
                f"Hamiltonian score matching needs model.kind = 'mlp' (vector data), "
                f"got {mc.kind!r}."
            )
        has_ckpt = self.ckpt_dir.is_dir() and bool(list_checkpoints(self.ckpt_dir))
        if has_ckpt and not resume:
            raise ValueError(
                f"run directory {str(self.run_dir)!r} already holds checkpoints; pass --resume "
                f"to continue it or choose another --out."
            )
        if resume and not has_ckpt:
            raise ValueError(f"--resume was given but {str(self.run_dir)!r} holds no checkpoint.")
        torch.manual_seed(config.seed)
        self.data = get_data(config.data.name, n_train=config.data.n_train, seed=config.seed)
        if len(self.data.data_shape) != 1:
            raise ValueError(
                f"Hamiltonian score matching needs vector data, but dataset {self.data.name!r} "
                f"has shape {self.data.data_shape}."
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"cannot write to run directory {str(self.run_dir)!r} ({exc.strerror})."
            ) from None
        d = self.data.data_shape[0]
        self.force = ForceField(d, hidden=mc.hidden, depth=mc.depth)
        self.velocity = velocity_predictor(
            d, hc.horizon, hidden=mc.hidden, depth=mc.depth, time_dim=mc.time_dim
        )
        self.ema = [p.detach().clone() for p in self.force.parameters()]
        self.opt_force = torch.optim.AdamW(
            self.force.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
        )
        self.opt_velocity = torch.optim.AdamW(
            self.velocity.parameters(), lr=hc.velocity_lr, betas=tc.betas
        )
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.history: list[tuple[float, float]] = []
        if resume:
            self._restore(load_checkpoint(self.ckpt_dir))
        (self.run_dir / "config.json").write_text(json.dumps(config.model_dump(), indent=1))

    def lr_at(self, step: int) -> float:
        warm = self.config.train.warmup
        return self.config.train.lr * (min(1.0, step / warm) if warm else 1.0)

    def train_step(self) -> tuple[float, float, float]:
        """velocity_steps φ steps, then one θ step; returns (φ loss, discrepancy, grad norm)."""
        tc, hc = self.config.train, self.config.hsm
        step = self.step + 1
        for group in self.opt_force.param_groups:
            group["lr"] = self.lr_at(step)
        phi_loss = math.nan
        for _ in range(hc.velocity_steps):
            x0 = self.data.batch(tc.batch_size, self.generator)
            phi_loss = fit_velocity(
                self.force,
                self.velocity,
                self.opt_velocity,
                x0,
                self.generator,
                hc.horizon,
                hc.leapfrog_steps,
            )
        x0 = self.data.batch(tc.batch_size, self.generator)
        loss = discrepancy_loss(
            self.force, self.velocity, x0, self.generator, hc.horizon, hc.leapfrog_steps
        )
        self.opt_force.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.force.parameters())
        if tc.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        value = float(loss.detach())
        if not all(math.isfinite(x) for x in (value, grad_norm, phi_loss)):
            raise NonFiniteLossError(
                f"non-finite Hamiltonian score matching loss at step {step}; training stopped "
                f"and the last good checkpoint in {str(self.ckpt_dir)!r} is kept.",
                step=step,
            )
        self.opt_force.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in params], 1.0 - tc.ema_decay)
        self.step = step
        return phi_loss, value, grad_norm

    def fit(self, steps: int | None = None) -> dict:
        """Train until `steps` (default config.train.steps); returns a summary dict."""
        from tqdm import tqdm

        tc = self.config.train
        target = tc.steps if steps is None else steps
        csv_path = self.run_dir / "metrics.csv"
        _truncate_rows(csv_path, self.step)
        new_file = not csv_path.exists()
        t_start = time.perf_counter()
        window: list[tuple[float, float]] = []
        bar = tqdm(total=target, initial=self.step, disable=not self.progress, desc="hsm")
        with open(csv_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new_file:
                writer.writerow(CSV_FIELDS)
            while self.step < target:
                phi_loss, hsd, grad_norm = self.train_step()
                self.history.append((phi_loss, hsd))
                window.append((phi_loss, hsd))
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == target:
                    mean_phi = sum(w[0] for w in window) / len(window)
                    mean_hsd = sum(w[1] for w in window) / len(window)
                    window.clear()
                    writer.writerow(
                        [
                            self.step,
                            f"{mean_phi:.6g}",
                            f"{mean_hsd:.6g}",
                            f"{self.lr_at(self.step):.6g}",
                            f"{grad_norm:.4g}",
                            f"{time.perf_counter() - t_start:.2f}",
                        ]
                    )
                    fh.flush()
                    bar.set_postfix(hsd=f"{mean_hsd:.4f}")
                if self.step % tc.ckpt_every == 0 or self.step == target:
                    self.save()
        bar.close()
        return {
            "step": self.step,
            "final_discrepancy": self.history[-1][1] if self.history else math.nan,
            "seconds": time.perf_counter() - t_start,
            "parameters": count_parameters(self.force) + count_parameters(self.velocity),
            "run_dir": str(self.run_dir),
        }

    # ----------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"force.{k}": v for k, v in self.force.state_dict().items()}
        tensors.update({f"velocity.{k}": v for k, v in self.velocity.state_dict().items()})
        names = [n for n, _ in self.force.named_parameters()]
        tensors.update({f"ema.{n}": e for n, e in zip(names, self.ema, strict=True)})
        for tag, opt in (("optim_force", self.opt_force), ("optim_velocity", self.opt_velocity)):
            for idx, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{tag}.{idx}.{key}"] = torch.as_tensor(value)
        return tensors

    def save(self) -> Path:
        groups = {
            tag: [
                {k: v for k, v in g.items() if k != "params"}
                for g in opt.state_dict()["param_groups"]
            ]
            for tag, opt in (("force", self.opt_force), ("velocity", self.opt_velocity))
        }
        meta = {
            "config": self.config.model_dump(),
            "objective": "hamiltonian_score_matching",
            "optimizer": {"param_groups": groups["force"]},
            "velocity_optimizer": {"param_groups": groups["velocity"]},
            "generator_state": encode_state(self.generator.get_state()),
            "torch_rng_state": encode_state(torch.get_rng_state()),
            "parameterization": "score",
        }
        return save_checkpoint(
            self.ckpt_dir, self.step, self.state_tensors(), meta, self.config.train.keep_last
        )

    def _restore(self, loaded: tuple[dict, dict[str, torch.Tensor]]) -> None:
        meta, tensors = loaded
        saved = config_from_dict(meta["config"])
        for section in ("model", "data", "hsm"):
            if getattr(saved, section) != getattr(self.config, section):
                raise ValueError(
                    f"the checkpoint in {str(self.ckpt_dir)!r} was trained with a different "
                    f"{section} section; resume with the same config."
                )
        try:
            self.force.load_state_dict(split_prefix(tensors, "force"))
            self.velocity.load_state_dict(split_prefix(tensors, "velocity"))
            ema = split_prefix(tensors, "ema")
            self.ema = [ema[n].clone() for n, _ in self.force.named_parameters()]
            for tag, key, opt in (
                ("optim_force", "optimizer", self.opt_force),
                ("optim_velocity", "velocity_optimizer", self.opt_velocity),
            ):
                state: dict[int, dict[str, torch.Tensor]] = {}
                for name, value in split_prefix(tensors, tag).items():
                    idx, field = name.split(".", 1)
                    state.setdefault(int(idx), {})[field] = value
                groups = meta[key]["param_groups"]
                current = opt.state_dict()["param_groups"]
                for g, c in zip(groups, current, strict=True):
                    g["params"] = c["params"]
                opt.load_state_dict({"state": state, "param_groups": groups})
            self.generator.set_state(decode_state(meta["generator_state"]))
            torch.set_rng_state(decode_state(meta["torch_rng_state"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"the checkpoint in {str(self.ckpt_dir)!r} is not a resumable Hamiltonian score "
                f"matching checkpoint ({type(exc).__name__}: {exc})."
            ) from None
        self.step = int(meta["step"])

    def ema_force(self) -> ForceField:
        """A copy of F_θ carrying the EMA weights."""
        import copy

        force = copy.deepcopy(self.force)
        with torch.no_grad():
            torch._foreach_copy_(list(force.parameters()), self.ema)
        return force.eval()


def _truncate_rows(path: Path, step: int) -> None:
    """Drop CSV rows logged after `step` (a run killed after its last checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(kept)


def train_hsm(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train `config` (objective.name = "hamiltonian_score_matching") into `run_dir`."""
    return HSMTrainer(config, run_dir, resume=resume, progress=progress).fit()


def load_force(path: str | Path, *, ema: bool = True) -> tuple[ForceField, Config, DataSource]:
    """(F_θ, config, data) of a Hamiltonian score matching run directory or checkpoint; the
    force carries the EMA weights unless ema=False and is in eval mode."""
    meta, tensors = load_checkpoint(path)
    if meta.get("objective") != "hamiltonian_score_matching":
        raise ValueError(
            f"{str(path)!r} is not a Hamiltonian score matching checkpoint; load score and "
            f"velocity models with phasediff.training.load_trained."
        )
    config = config_from_dict(meta["config"])
    data = get_data(config.data.name, n_train=config.data.n_train, seed=config.seed)
    force = ForceField(data.data_shape[0], hidden=config.model.hidden, depth=config.model.depth)
    weights = split_prefix(tensors, "ema" if ema else "force")
    if ema:
        weights = {n: weights[n] for n, _ in force.named_parameters() if n in weights}
    try:
        force.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint weights do not fit the force network ({exc}).") from None
    return force.eval(), config, data
