"""Hamiltonian score matching: learn a score F_θ without noise by alternating a
velocity-predictor step and a force step (Holderrieth et al. 2024; docs/design.md §3; docs/hgf.md).

Each iteration draws x₀ ~ data, v₀ ~ N(0, I), simulates x' = v, v' = F_θ(x) by leapfrog on
[0, T] (`hamiltonian_sm.leapfrog_steps` steps) and then

1. φ step (`hamiltonian_sm.velocity_steps` times, fresh trajectories each, no gradient to θ):
   minimise E‖φ(x_t, t) − v_t‖², so φ → φ*_t(x) = E[v_t | x_t = x];
2. θ step: minimise T·E[2 φ(x_t, t)·v_t − ‖φ(x_t, t)‖²] with φ frozen, differentiated through
   the simulated trajectory. At φ = φ* this value is the Hamiltonian score discrepancy
   HSD(θ) = ∫ E‖φ*_t‖² dt and its θ-gradient is ∇HSD (envelope theorem), so θ descends HSD,
   which is zero iff F_θ = ∇log p_data.

The loop is a `TrainingRun` (training/run.py) and resumable bit for bit: both networks, the
force EMA, both AdamW states and the generator are checkpointed in the atomic safetensors +
JSON format of `checkpoint.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from phasediff.data import DataSource
from phasediff.models import TimeMLP, count_parameters
from phasediff.objectives.hamiltonian import (
    HAMILTONIAN_SCORE_MATCHING,
    VELOCITY,
    discrepancy_bound,
    simulate_phase_space,
    velocity_predictor_loss,
)
from phasediff.training.checkpoint import load_checkpoint, split_prefix
from phasediff.training.config import Config, config_from_dict
from phasediff.training.run import TrainingRun, first_non_finite_gradient
from phasediff.training.trainer import build_data, record_data_statistics


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
class HamiltonianSMTrainer(TrainingRun):
    """Train a force field F_θ by Hamiltonian score matching for `config` in `run_dir`.

    Uses config.data (vector data), config.model (hidden, depth, time_dim for both networks),
    config.train (steps, batch_size, lr, warmup and lr_decay for θ, grad_clip, ema_decay,
    skip_nonfinite, logging, checkpoints, threads) and config.hamiltonian_sm (horizon,
    leapfrog_steps, velocity_steps, velocity_lr). resume=True continues from the newest valid
    checkpoint. The run plumbing (run directory, metrics.csv, checkpoints, EMA of F_θ, learning
    rate, non-finite policy) is `TrainingRun`'s; a step that meets a NaN/Inf in any φ or θ loss
    or gradient leaves both networks and both optimizers as they were before it.
    """

    averaged = ("velocity_loss", "discrepancy")
    resume_sections = ("model", "data", "hamiltonian_sm")
    description = "Hamiltonian score matching"

    def __init__(
        self, config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
    ) -> None:
        tc, hc, mc = config.train, config.hamiltonian_sm, config.model
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
        data = build_data(config)  # every dataset, your own points files included
        if len(data.data_shape) != 1:
            raise ValueError(
                f"Hamiltonian score matching needs vector data, but dataset {data.name!r} "
                f"has shape {data.data_shape}."
            )
        super().__init__(config, run_dir, resume=resume, progress=progress)
        self.data = data
        # a standardised points file: its mean/std go into config.json and the checkpoints
        self.config = config = record_data_statistics(config, data)
        d = data.data_shape[0]
        self.force = ForceField(d, hidden=mc.hidden, depth=mc.depth)
        self.velocity = velocity_predictor(
            d, hc.horizon, hidden=mc.hidden, depth=mc.depth, time_dim=mc.time_dim
        )
        self.track_ema(self.force.named_parameters())
        self.opt_force = torch.optim.AdamW(
            self.force.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
        )
        self.opt_velocity = torch.optim.AdamW(
            self.velocity.parameters(), lr=hc.velocity_lr, betas=tc.betas
        )
        self.begin()

    def train_step(self) -> tuple[float, float, float]:
        """velocity_steps φ steps, then one θ step; returns (φ loss, discrepancy, grad norm of
        F_θ before clipping). A NaN/Inf loss or gradient rolls the φ steps of this step back and
        stops or skips the batch (`skip_or_stop`)."""
        tc, hc = self.config.train, self.config.hamiltonian_sm
        step = self.step + 1
        self.set_lr(self.opt_force, step)
        before = _snapshot(self.velocity, self.opt_velocity)
        phi_loss = math.nan
        for _ in range(hc.velocity_steps):
            x0 = self.data.batch(tc.batch_size, self.generator)
            with torch.no_grad():
                x_t, v_t, t = simulate_phase_space(
                    self.force, x0, hc.horizon, hc.leapfrog_steps, self.generator
                )
            loss = velocity_predictor_loss(self.velocity, x_t, v_t, t)
            self.opt_velocity.zero_grad(set_to_none=True)
            phi_loss = float(loss.detach())
            bad = None if math.isfinite(phi_loss) else "velocity-predictor loss"
            if bad is None:
                loss.backward()
                grads = [p.grad for p in self.velocity.parameters() if p.grad is not None]
                if not math.isfinite(float(torch.nn.utils.get_total_norm(grads))):
                    bad = first_non_finite_gradient(self.velocity.named_parameters(), "velocity.")
            if bad is not None:
                _restore_snapshot(self.velocity, self.opt_velocity, before)
                return self.skip_or_stop(step, bad)
            self.opt_velocity.step()
        x0 = self.data.batch(tc.batch_size, self.generator)
        loss = discrepancy_loss(
            self.force, self.velocity, x0, self.generator, hc.horizon, hc.leapfrog_steps
        )
        self.opt_force.zero_grad(set_to_none=True)
        value = float(loss.detach())
        bad = None if math.isfinite(value) else "discrepancy loss"
        if bad is None:
            loss.backward()
            params = list(self.force.parameters())
            total_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            grad_norm = float(total_norm)
            if not math.isfinite(grad_norm):
                bad = first_non_finite_gradient(self.force.named_parameters(), "force.")
        if bad is not None:
            _restore_snapshot(self.velocity, self.opt_velocity, before)
            return self.skip_or_stop(step, bad)
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, tc.grad_clip, total_norm)
        self.opt_force.step()
        self.update_ema()
        self.step = step
        return phi_loss, value, grad_norm

    # ----------------------------------------------------------------- run hooks
    @property
    def progress_label(self) -> str:
        return "hamiltonian_sm"

    def parameter_count(self) -> int:
        return count_parameters(self.force) + count_parameters(self.velocity)

    def optimizers(self) -> list[tuple[str, str, torch.optim.Optimizer]]:
        return [
            ("optim_force", "optimizer", self.opt_force),
            ("optim_velocity", "velocity_optimizer", self.opt_velocity),
        ]

    def model_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"force.{k}": v for k, v in self.force.state_dict().items()}
        tensors.update({f"velocity.{k}": v for k, v in self.velocity.state_dict().items()})
        return tensors

    def checkpoint_meta(self) -> dict:
        return {"objective": HAMILTONIAN_SCORE_MATCHING, "parameterization": "score"}

    def load_model_tensors(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.force.load_state_dict(split_prefix(tensors, "force"))
        self.velocity.load_state_dict(split_prefix(tensors, "velocity"))

    def ema_force(self) -> ForceField:
        """A copy of F_θ carrying the EMA weights."""
        import copy

        force = copy.deepcopy(self.force)
        with torch.no_grad():
            torch._foreach_copy_(list(force.parameters()), self.ema)
        return force.eval()


def _snapshot(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list, dict]:
    """Copies of a network's parameters and its optimizer's state (to undo a bad step)."""
    import copy

    params = [p.detach().clone() for p in net.parameters()]
    return params, copy.deepcopy(optimizer.state_dict())


def _restore_snapshot(net: nn.Module, optimizer: torch.optim.Optimizer, snapshot) -> None:
    params, state = snapshot
    with torch.no_grad():
        torch._foreach_copy_(list(net.parameters()), params)
    optimizer.load_state_dict(state)
    optimizer.zero_grad(set_to_none=True)


def train_hamiltonian_sm(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train `config` (objective.name = "hamiltonian_score_matching") into `run_dir`."""
    return HamiltonianSMTrainer(config, run_dir, resume=resume, progress=progress).fit()


def load_force(path: str | Path, *, ema: bool = True) -> tuple[ForceField, Config, DataSource]:
    """(F_θ, config, data) of a Hamiltonian score matching run directory or checkpoint; the
    force carries the EMA weights unless ema=False and is in eval mode."""
    meta, tensors = load_checkpoint(path)
    if meta.get("objective") != HAMILTONIAN_SCORE_MATCHING:
        raise ValueError(
            f"{str(path)!r} is not a Hamiltonian score matching checkpoint; load score and "
            f"velocity models with phasediff.training.load_trained."
        )
    config = config_from_dict(meta["config"])
    data = build_data(config)  # with the run's recorded standardisation, if any
    force = ForceField(data.data_shape[0], hidden=config.model.hidden, depth=config.model.depth)
    weights = split_prefix(tensors, "ema" if ema else "force")
    if ema:
        weights = {n: weights[n] for n, _ in force.named_parameters() if n in weights}
    try:
        force.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint weights do not fit the force network ({exc}).") from None
    return force.eval(), config, data
