"""Annealed Langevin dynamics (ALD) and momentum-imbued Langevin dynamics (MILD), docs/design.md
§4.

Both samplers work with any noise-conditional score `score(x, sigma) -> tensor like x`
(NCSN-style, Song & Ermon 2019); `sigma` is passed as a Python float. `ve_score_adapter`
turns a phasediff model trained on the VE process into such a callable. See docs/mild.md for
the choices made here, their sources and the Gaussian benchmark.

ALD, level i = 1…L with α_i = ε σ_i² / σ_L², T steps each:
    x ← x + α_i s(x, σ_i) + sqrt(2 α_i) z.
MILD (seed 002, Algorithm 1), same α_i, v₀ = 0 and v carried from level to level:
    v ← γ v + α_i s(x + γ v, σ_i);   x ← x + v + sqrt(2 α_i) z.
Both optionally end with the denoising step x ← x + σ_L² s(x, σ_L) (one extra NFE).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from phasediff.objectives import parameterization_of
from phasediff.processes import LinearProcess
from phasediff.processes.schedules import GeometricVarianceBeta
from phasediff.samplers.base import Recorder, Samples, check_shape

ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]

# Defaults: ε = 2e-5 is NCSN's (Song & Ermon 2019); γ = 0.9 is the usual heavy-ball /
# Nesterov momentum. The MILD seed gives neither value (docs/mild.md tabulates the sources).
DEFAULT_EPS = 2e-5
DEFAULT_GAMMA = 0.9


# ---------------------------------------------------------------------------- validation
def noise_levels(sigma_max: float, sigma_min: float, L: int) -> torch.Tensor:
    """Geometric noise levels σ_1 = sigma_max > … > σ_L = sigma_min (float64, length L ≥ 2).

    σ_i = σ_max (σ_min/σ_max)^((i−1)/(L−1)), the NCSN/NCSNv2 schedule; the end points are exact.
    """
    if isinstance(L, bool) or not isinstance(L, int) or L < 2:
        raise ValueError(f"L must be an integer ≥ 2, got {L!r}.")
    for value, name in ((sigma_max, "sigma_max"), (sigma_min, "sigma_min")):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if sigma_max <= sigma_min:
        raise ValueError(
            f"sigma_max must be larger than sigma_min, got sigma_max={sigma_max}, "
            f"sigma_min={sigma_min}."
        )
    u = torch.linspace(0.0, 1.0, L, dtype=torch.float64)
    sigmas = torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))
    sigmas[0], sigmas[-1] = float(sigma_max), float(sigma_min)
    return sigmas


def _check_sigmas(sigmas) -> torch.Tensor:
    """1-D, non-empty, positive, finite and strictly decreasing, returned as float64."""
    try:
        s = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"sigmas must be a 1-D sequence of noise levels σ_1 > … > σ_L > 0, got {sigmas!r}."
        ) from None
    if s.ndim != 1 or s.numel() < 1:
        raise ValueError(
            f"sigmas must be a non-empty 1-D sequence σ_1 > … > σ_L > 0, got shape "
            f"{tuple(s.shape)}."
        )
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"sigmas must be finite and > 0, got {s.tolist()}.")
    if s.numel() > 1 and not bool((s[1:] < s[:-1]).all()):
        raise ValueError(f"sigmas must be strictly decreasing (σ_1 > … > σ_L), got {s.tolist()}.")
    return s


def _check_common(T, eps) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (steps per noise level) must be an integer ≥ 1, got {T!r}.")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}.")
    if eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}.")


def _check_gamma(gamma) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma < 1:
        raise ValueError(f"gamma must be a number with 0 ≤ gamma < 1, got {gamma!r}.")


def _initial_state(
    shape, x_init, sigma_1: float, generator, device, dtype
) -> tuple[tuple[int, ...], torch.Tensor]:
    """x ~ N(0, σ_1² I) of `shape`, or a checked copy of x_init."""
    shape = check_shape(shape)
    if x_init is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return shape, x * sigma_1
    if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point():
        raise ValueError("x_init must be a floating-point torch.Tensor shaped like `shape`.")
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}.")
    if not bool(torch.isfinite(x_init).all()):
        raise ValueError("x_init contains NaN or Inf; it must be finite.")
    return shape, x_init.detach().to(dtype=dtype).clone()


class _CountingScore:
    """Counts calls of a score function (NFE is measured, never inferred), checks shapes and
    keeps the last call for `last_x0` (the samplers' progress and callback reporting)."""

    def __init__(self, score: ScoreFn) -> None:
        if not callable(score):
            raise ValueError(f"score must be a callable score(x, sigma), got {type(score)}.")
        self.score = score
        self.nfe = 0
        self.last: tuple[torch.Tensor, float, torch.Tensor] | None = None

    def last_x0(self) -> torch.Tensor | None:
        """x̂₀ = x + σ² s(x, σ) (Tweedie) at the last call; None before the first."""
        if self.last is None:
            return None
        x, sigma, out = self.last
        return x + sigma**2 * out

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        out = self.score(x, sigma)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"score(x, sigma) must return a tensor shaped like x {tuple(x.shape)}, got {got}."
            )
        self.last = (x, float(sigma), out)
        return out


# ---------------------------------------------------------------------------- samplers
@torch.no_grad()
def annealed_langevin(
    score: ScoreFn,
    shape: Sequence[int],
    sigmas,
    *,
    T: int = 5,
    eps: float = DEFAULT_EPS,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    x_init: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1).

    x ~ N(0, σ_1² I) (or x_init); for i = 1…L, α_i = ε σ_i²/σ_L², T times
    x ← x + α_i s(x, σ_i) + sqrt(2 α_i) z; then, if `denoise`, x ← x + σ_L² s(x, σ_L).
    NFE = L·T (+1 with denoise), counted. Returns Samples with z = x[:, None] (B, 1, *data),
    times = σ's, and (optionally) trajectory = [x_init, x after level 1, …, x after level L],
    each (B, 1, *data). `callback` gets the common keys {"i", "t", "z", "denoised", "nfe"}
    (t = σ_i, z = x[:, None], denoised = x + σ_i² s from the step's call; docs/samplers.md)
    and {"level", "step", "sigma", "x"} after every step; `progress` shows a tqdm bar over
    the L·T steps.
    Runs under torch.no_grad(); a score that needs autograd must enable it itself.
    """
    return _anneal(
        score,
        shape,
        sigmas,
        None,
        T=T,
        eps=eps,
        denoise=denoise,
        generator=generator,
        callback=callback,
        return_trajectory=return_trajectory,
        progress=progress,
        x_init=x_init,
        device=device,
        dtype=dtype,
    )


@torch.no_grad()
def mild(
    score: ScoreFn,
    shape: Sequence[int],
    sigmas,
    *,
    T: int = 2,
    eps: float = DEFAULT_EPS,
    gamma: float = DEFAULT_GAMMA,
    consistent_noise: bool = False,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    x_init: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Samples:
    """Momentum-imbued Langevin dynamics (MILD, Shetty et al. 2024, Alg. 1 of seed 002).

    x ~ N(0, σ_1² I) (or x_init), v = 0; for i = 1…L, α_i = ε σ_i²/σ_L², T times
    v ← γ v + α_i s(x + γ v, σ_i);  x ← x + v + sqrt(2 α_i) z.
    v is carried across levels (Alg. 1 lines 8–9), never reset. Optional final denoising
    x ← x + σ_L² s(x, σ_L). γ = 0 is exactly ALD. NFE = L·T (+1), counted. Note: for γ > 0
    the per-level fixed point on Gaussian data has variance ≈ (1 − γ)(s² + σ_i²), not
    s² + σ_i² (docs/mild.md). `consistent_noise=True` (not in the seed) scales the noise to
    sqrt(2 α_i/(1 − γ)), which restores the fixed point s² + σ_i². Output as in
    `annealed_langevin`; the callback also gets "v".
    """
    _check_gamma(gamma)
    return _anneal(
        score,
        shape,
        sigmas,
        float(gamma),
        T=T,
        noise_boost=1.0 / (1.0 - float(gamma)) if consistent_noise else 1.0,
        eps=eps,
        denoise=denoise,
        generator=generator,
        callback=callback,
        return_trajectory=return_trajectory,
        progress=progress,
        x_init=x_init,
        device=device,
        dtype=dtype,
    )


def _anneal(
    score: ScoreFn,
    shape: Sequence[int],
    sigmas,
    gamma: float | None,
    *,
    T: int,
    eps: float,
    denoise: bool,
    noise_boost: float = 1.0,
    generator: torch.Generator | None,
    callback: Callable[[dict], None] | None,
    return_trajectory: bool,
    progress: bool,
    x_init: torch.Tensor | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> Samples:
    """Shared loop: gamma=None is ALD, a float is MILD (Nesterov look-ahead x + γv)."""
    _check_common(T, eps)
    sig = _check_sigmas(sigmas)
    counted = _CountingScore(score)
    if x_init is not None and device is None and isinstance(x_init, torch.Tensor):
        device = x_init.device
    shape, x = _initial_state(shape, x_init, float(sig[0]), generator, device, dtype)
    v = torch.zeros_like(x) if gamma is not None else None
    sigma_L = float(sig[-1])
    trajectory = [x[:, None].clone()] if return_trajectory else []
    name = "annealed_langevin" if gamma is None else "mild"
    record = Recorder(
        x[:, None],
        sig,
        counted,
        name=name,
        callback=callback,
        progress=progress,
        total=len(sig) * T,
    )
    step = 0
    for level, sigma in enumerate(sig.tolist()):
        alpha = eps * sigma**2 / sigma_L**2
        noise_scale = math.sqrt(2.0 * alpha * noise_boost)
        for t in range(T):
            z = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
            if gamma is None:
                x = x + alpha * counted(x, sigma) + noise_scale * z
            else:
                v = gamma * v + alpha * counted(x + gamma * v, sigma)
                x = x + v + noise_scale * z
            extra = {"level": level, "step": t, "sigma": sigma, "x": x}
            record.report(step, sigma, x[:, None], **extra, **({} if v is None else {"v": v}))
            step += 1
        if return_trajectory:
            trajectory.append(x[:, None].clone())
    if denoise:
        x = x + sigma_L**2 * counted(x, sigma_L)
    return record.samples(x[:, None], sig, trajectory)


# ---------------------------------------------------------------------------- VE adapter
def _check_ve(process) -> None:
    if not isinstance(process, LinearProcess):
        raise ValueError(
            f"process must be a LinearProcess (the VE SDE, phasediff.processes.ve()), "
            f"got {type(process).__name__}."
        )
    if process.k != 1:
        raise ValueError(
            f"ve_score_adapter needs a k = 1 process (the VE SDE, phasediff.processes.ve()), "
            f"got '{process.name}' with k = {process.k}."
        )
    ve_like = (
        not process.has_stationary_law
        and isinstance(process.schedule, GeometricVarianceBeta)
        and float(process.A.abs().max()) == 0.0
        and abs(float(process.D[0, 0]) - 0.5) <= 1e-12
        and process.noise_damping == 0.0
    )
    if not ve_like:
        raise ValueError(
            f"ve_score_adapter needs a variance-exploding process (k = 1, A = 0, D = ½, no "
            f"stationary law, GeometricVarianceBeta schedule, no noise damping, as made by "
            f"phasediff.processes.ve()), got '{process.name}'."
        )


def ve_sigma_range(process: LinearProcess) -> tuple[float, float]:
    """(σ_lo, σ_hi) = (sqrt(B(0, t_min)), sqrt(B(0, T))): the kernel std over [t_min, T]."""
    _check_ve(process)
    ends = torch.tensor([process.t_min, process.T], dtype=torch.float64)
    lo, hi = process.beta_integral(ends).sqrt().tolist()
    return lo, hi


def ve_score_adapter(
    model, process: LinearProcess
) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """score(x, sigma) for a phasediff model trained on the VE process (k = 1).

    σ ↦ t solves Var(x_t | x₀) = B(0, t) = σ(t)² − σ_min² = σ² (D = ½), i.e.
    t = schedule.inverse_integral(σ²), clamped to [t_min, T]; σ outside
    [sqrt(B(0, t_min)), sqrt(B(0, T))] by more than 1e-6 (relative) raises ValueError.
    The model sees z = x[:, None] and t of shape (B,) in x's dtype; its output (B, 1, *data) is
    the score, or for ε-models the score −ε/σ_t with σ_t = sqrt(kernel variance at that t)
    (U = 1/L for k = 1). `sigma` may be a number, a 0-d tensor or one value per batch row.
    """
    _check_ve(process)
    kind = parameterization_of(model)
    lo, hi = ve_sigma_range(process)
    schedule = process.schedule

    def score(x: torch.Tensor, sigma) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
            raise ValueError("x must be a floating-point tensor shaped (batch, *data_shape).")
        B = x.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().reshape(-1)
        if s.numel() == 1:
            s = s.expand(B)
        if s.numel() != B:
            raise ValueError(
                f"sigma must be a number or have one value per batch row ({B}), "
                f"got {s.numel()} values."
            )
        if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
            raise ValueError(f"sigma must be finite and > 0, got values in [{s.min()}, {s.max()}].")
        s_lo, s_hi = float(s.min()), float(s.max())
        if s_lo < lo * (1 - 1e-6) or s_hi > hi * (1 + 1e-6):
            raise ValueError(
                f"sigma must lie in the VE process's range [{lo:.6g}, {hi:.6g}] "
                f"(kernel std at t_min and T), got values in [{s_lo:.6g}, {s_hi:.6g}]."
            )
        t = schedule.inverse_integral(s * s).clamp(process.t_min, process.T)
        t_model = t.to(device=x.device, dtype=x.dtype)
        out = model(x[:, None], t_model)
        expected = (B, 1, *x.shape[1:])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model must return shape {expected}, got {got}.")
        out = out[:, 0]
        if kind == "score":
            return out
        # σ_t from the time the model actually saw (after rounding to x's dtype).
        var = process.kernel(t_model.detach().to("cpu", torch.float64))[1][:, 0, 0]
        sigma_t = var.sqrt().to(device=x.device, dtype=x.dtype)
        return -out / sigma_t.reshape(B, *([1] * (x.ndim - 1)))

    return score


# ---------------------------------------------------------------------------- trained VE runs
LANGEVIN_SAMPLERS = ("annealed_langevin", "mild")
"""The noise-conditional samplers by name. They take (score, shape, sigmas), not the registry's
(model, process, shape, steps), so they are not registry entries; `sample_ve_model` runs
them on a trained VE model (`phasediff sample --sampler annealed_langevin|mild`)."""


def ve_levels(process: LinearProcess, L: int) -> torch.Tensor:
    """L geometric noise levels of a VE process: σ_1 = sqrt(B(0, T)) (≈ σ_max, the prior's
    std) down to σ_L = the schedule's σ_min (0.01 for the preset; NCSN's σ_L)."""
    _check_ve(process)
    hi = ve_sigma_range(process)[1]
    return noise_levels(hi, float(process.schedule.sigma_min), L)


def sample_ve_model(
    model,
    process: LinearProcess,
    shape: Sequence[int],
    sampler: str = "mild",
    *,
    levels: int = 100,
    steps_per_level: int | None = None,
    eps: float = DEFAULT_EPS,
    gamma: float | None = None,
    consistent_noise: bool = False,
    **options,
) -> Samples:
    """ALD (`sampler="annealed_langevin"`) or MILD (`"mild"`) on a model trained on the VE
    process, through `ve_score_adapter`, over `ve_levels(process, levels)`.

    `steps_per_level` defaults to the sampler's T (5 for ALD, 2 for MILD), `gamma` to
    DEFAULT_GAMMA; `gamma` and `consistent_noise` are MILD's. Other `options` (generator,
    progress, return_trajectory, …) go to the sampler. A velocity model, a process other than
    VE or an unknown name is one sentence (ValueError).
    """
    from phasediff.objectives.hamiltonian import is_velocity_model

    if sampler not in LANGEVIN_SAMPLERS:
        raise ValueError(
            f"unknown noise-conditional sampler {sampler!r}; valid ones are: "
            f"{', '.join(LANGEVIN_SAMPLERS)}."
        )
    if is_velocity_model(model):
        raise ValueError(
            f"sampler {sampler!r} needs a noise-conditional score model trained on the VE "
            "process, and this run is a velocity model (use hgf_heun or hgf_ei)."
        )
    try:
        _check_ve(process)
    except ValueError:
        raise ValueError(
            f"sampler {sampler!r} needs a model trained on the VE process (process.preset = "
            f'"ve", e.g. configs/toy_ve.toml or configs/digits_ve.toml), and this run\'s '
            f"process is {getattr(process, 'name', type(process).__name__)!r}."
        ) from None
    sigmas = ve_levels(process, levels)
    score = ve_score_adapter(model, process)
    if sampler == "annealed_langevin":
        if gamma is not None or consistent_noise:
            raise ValueError("gamma and consistent_noise are MILD's options; ALD takes neither.")
        T = 5 if steps_per_level is None else steps_per_level
        return annealed_langevin(score, shape, sigmas, T=T, eps=eps, **options)
    T = 2 if steps_per_level is None else steps_per_level
    gamma = DEFAULT_GAMMA if gamma is None else gamma
    return mild(
        score,
        shape,
        sigmas,
        T=T,
        eps=eps,
        gamma=gamma,
        consistent_noise=consistent_noise,
        **options,
    )


# ---------------------------------------------------------------------------- Gaussian benchmark
def gaussian_variance_exact(
    s2: float,
    sigmas,
    *,
    T: int,
    eps: float = DEFAULT_EPS,
    gamma: float | None = None,
    denoise: bool = True,
    consistent_noise: bool = False,
) -> float:
    """Exact Var(x) after ALD (gamma=None) or MILD on data N(0, s² I), x_init ~ N(0, σ_1² I).

    With the exact score s_σ(x) = −x/(s² + σ²) both samplers are linear, so the covariance of
    (x, v) per coordinate is propagated exactly: with a = α_i/(s² + σ_i²),
    (x, v) ← M (x, v) + (sqrt(2α_i) z, 0), M = [[1−a, γ(1−a)], [−a, γ(1−a)]] (γ = 0: ALD);
    the denoising step multiplies x by s²/(s² + σ_L²); `consistent_noise` multiplies the noise
    variance by 1/(1 − γ). Independent of the sampler code.
    """
    _check_common(T, eps)
    sig = _check_sigmas(sigmas).tolist()
    g = 0.0 if gamma is None else float(gamma)
    _check_gamma(g)
    cov = torch.zeros(2, 2, dtype=torch.float64)
    cov[0, 0] = sig[0] ** 2
    for sigma in sig:
        alpha = eps * sigma**2 / sig[-1] ** 2
        a = alpha / (s2 + sigma**2)
        M = torch.tensor([[1 - a, g * (1 - a)], [-a, g * (1 - a)]], dtype=torch.float64)
        boost = 1.0 / (1.0 - g) if consistent_noise else 1.0
        N = torch.tensor([[2 * alpha * boost, 0.0], [0.0, 0.0]], dtype=torch.float64)
        for _ in range(T):
            cov = M @ cov @ M.T + N
    var = float(cov[0, 0])
    if denoise:
        var *= (s2 / (s2 + sig[-1] ** 2)) ** 2
    return var


def mild_vs_ald_table(
    s2: float = 0.25,
    sigma_max: float = 50.0,
    sigma_min: float = 0.01,
    L: int = 100,
    steps: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    eps: float = DEFAULT_EPS,
    gamma: float = DEFAULT_GAMMA,
    gamma_consistent: float = 0.7,
    denoise: bool = True,
    shape: tuple[int, int] = (2000, 100),
    seed: int = 0,
) -> list[dict[str, float]]:
    """ALD vs MILD on data N(0, s² I) with the exact VE score −x/(s² + σ²), one row per T.

    Each row: T, NFE, Monte Carlo variance and |var − s²| for ALD and MILD (both started from
    the same seed), and the exact variance of each discrete scheme (`gaussian_variance_exact`);
    "mildc" is MILD with `consistent_noise=True` at `gamma_consistent`.
    The Monte Carlo standard error of a variance is s²·sqrt(2/(B·d)) (0.32 % for 2000×100).
    """
    sigmas = noise_levels(sigma_max, sigma_min, L)

    def score(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return -x / (s2 + sigma**2)

    rows = []
    for T in steps:
        out = {}
        variants = (
            ("ald", {}),
            ("mild", {"gamma": gamma}),
            ("mildc", {"gamma": gamma_consistent, "consistent_noise": True}),
        )
        for name, kw in variants:
            sampler = annealed_langevin if name == "ald" else mild
            g = torch.Generator().manual_seed(seed)
            res = sampler(score, shape, sigmas, T=T, eps=eps, denoise=denoise, generator=g, **kw)
            var = float(res.x.double().pow(2).mean())
            exact = gaussian_variance_exact(
                s2,
                sigmas,
                T=T,
                eps=eps,
                gamma=kw.get("gamma"),
                denoise=denoise,
                consistent_noise=kw.get("consistent_noise", False),
            )
            out.update({f"{name}_var": var, f"{name}_err": abs(var - s2), f"{name}_exact": exact})
            out["nfe"] = res.nfe
        rows.append({"T": T, **out})
    return rows


def format_table(rows: list[dict[str, float]]) -> str:
    """Markdown table of `mild_vs_ald_table` rows."""
    lines = [
        "| T | NFE | ALD var | ALD \\|var − s²\\| | ALD exact | MILD var | MILD \\|var − s²\\| "
        "| MILD exact | MILD-c var | MILD-c \\|var − s²\\| | MILD-c exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['nfe']} | {r['ald_var']:.4f} | {r['ald_err']:.4f} | "
            f"{r['ald_exact']:.4f} | {r['mild_var']:.4f} | {r['mild_err']:.4f} | "
            f"{r['mild_exact']:.4f} | {r['mildc_var']:.4f} | {r['mildc_err']:.4f} | "
            f"{r['mildc_exact']:.4f} |"
        )
    return "\n".join(lines)
