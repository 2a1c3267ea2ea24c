"""Conditional synthesis for every linear process (docs/design.md §4; derivation in
docs/images.md).

**Inpainting by replacement through the exact kernel.** Given data x₀ on a set K of known
pixels, after every sampler step that lands at time t the state of the known pixels — *all*
k blocks of them, the data block x and the auxiliaries v, a, … jointly — is replaced by a
fresh draw from the forward kernel

    z_t[K] ~ N(e(t) x₀[K], Σ_t ⊗ I),     e(t) = E(t)[:, 0],

i.e. the law of z_t given x₀ alone, with the auxiliaries started from their initial law and
marginalised exactly (hybrid score matching's kernel). The auxiliaries of the known pixels are
therefore sampled from their kernel conditional given x₀, not from the reverse dynamics; the
unknown pixels follow the model's reverse dynamics, which see the replaced known pixels
through the network. After the last step the known pixels of the x block are set to x₀
exactly. This is the "replacement" method of Song et al. (2021) carried to phase space; like
the original it approximates, but is not, the exact conditional sampler (the known pixels are
not conditioned on the unknown ones) — tests/test_conditional.py measures how close it gets on
Gaussian data with a closed-form conditional.

The replacement runs in the samplers' ``callback``, which receives the live state tensor
``z`` that the sampler continues from; the samplers of ``INPAINT_SAMPLERS`` all continue from
that very tensor after the callback, so an in-place update is honoured (checked per sampler
in the tests). ``dopri5`` (one callback at the end) and the HGF samplers (position-only state)
are refused.

**Classifier guidance.** ``ClassifierGuidance`` wraps a score model and a noise-aware
classifier log p(c | z_t, t) trained on the full state z_t (all blocks) into a model in score
parameterisation:

    ŝ_guided(z, t) = ŝ(z, t) + w · ∇_{z_n} log p(c | z_t = z, t)      (noisy blocks n only),

so every sampler works unchanged (only D∇log p enters the dynamics, and D vanishes outside the
noisy blocks). With the exact score and the exact classifier, w = 1 is the score of the
class-conditional law p_t(z | c) (Bayes' rule); w > 1 sharpens it. Network evaluations (NFE)
count the score model only; ``classifier_calls`` counts the classifier's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from phasediff.objectives import parameterization_of, score_from_output
from phasediff.processes import LinearProcess, apply_blocks
from phasediff.samplers.base import Samples
from phasediff.samplers.registry import get_sampler, resolve, sampler_names

__all__ = [
    "INPAINT_SAMPLERS",
    "ClassifierGuidance",
    "KernelReplacement",
    "broadcast_condition",
    "inpaint",
    "load_condition",
]

INPAINT_SAMPLERS = sampler_names(inpaint=True)
"""Samplers that continue from the tensor their callback received (in-place edits count):
the registry's entries with ``inpaint=True``."""


def _as_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        import numpy as np

        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError):
        kind = type(value).__name__
        raise ValueError(f"{name} must be an array or tensor, got {kind}.") from None


def broadcast_condition(
    known: object, mask: object, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(known float32, mask bool), both broadcast to ``shape`` = (batch, *data_shape).

    ``known`` and ``mask`` may be shaped like one example (*data_shape) or like the batch; the
    mask is True (or 1) on known pixels. Values of ``known`` on unknown pixels are ignored."""
    known_t, mask_t = _as_tensor(known, "known"), _as_tensor(mask, "mask")
    if mask_t.dtype != torch.bool:
        if mask_t.is_floating_point() and not torch.isfinite(mask_t).all():
            raise ValueError("mask must hold only 0/1 or True/False, got NaN or Inf.")
        if not bool(((mask_t == 0) | (mask_t == 1)).all()):
            raise ValueError("mask must hold only 0/1 or True/False (1 = known pixel).")
        mask_t = mask_t != 0
    if not known_t.is_floating_point():
        known_t = known_t.to(torch.float32)
    for value, name in ((known_t, "known"), (mask_t, "mask")):
        try:
            torch.broadcast_shapes(tuple(value.shape), shape)
            if value.ndim > len(shape):
                raise RuntimeError
        except RuntimeError:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, which does not broadcast to the samples' "
                f"shape {shape} (batch, *data_shape); give one example's shape "
                f"{shape[1:]} or the whole batch's."
            ) from None
    mask_b = mask_t.expand(shape)
    known_b = known_t.to(torch.float32).expand(shape)
    if not bool(torch.isfinite(known_b[mask_b]).all()):
        raise ValueError("known must be finite on the known pixels (mask = 1), got NaN or Inf.")
    if not bool(mask_b.any()):
        raise ValueError("mask marks no pixel as known; inpainting needs at least one (mask = 1).")
    return known_b.contiguous(), mask_b.contiguous()


def load_condition(
    known_path: str | Path | None, mask_path: str | Path | None, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(known, mask) from two .npy files (``numpy.load`` with ``allow_pickle=False``),
    broadcast to ``shape`` = (num, *data_shape) by ``broadcast_condition``."""
    import numpy as np

    if known_path is None or mask_path is None:
        raise ValueError("inpainting needs both --inpaint MASK.npy and --known X.npy.")
    arrays = []
    for path, flag in ((known_path, "--known"), (mask_path, "--inpaint")):
        try:
            arrays.append(np.load(Path(path), allow_pickle=False))
        except FileNotFoundError:
            raise ValueError(f"{flag} file {str(path)!r} does not exist.") from None
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            raise ValueError(
                f"{flag} file {str(path)!r} is not a readable .npy array without pickles "
                f"({reason.rstrip('.')})."
            ) from None
    known, mask = arrays
    if known.dtype.kind not in "fiub" or mask.dtype.kind not in "fiub":
        raise ValueError("--known and --inpaint must hold numbers (mask: 0/1 or booleans).")
    return broadcast_condition(known, mask, tuple(shape))


class KernelReplacement:
    """Sampler callback: after each step at time t, the known pixels of every block are
    redrawn from the kernel N(e(t) x₀, Σ_t ⊗ I); after step ``steps − 1`` the known pixels of
    the x block are x₀ exactly. ``then`` is called afterwards with the same info dict."""

    def __init__(
        self,
        process: LinearProcess,
        known: torch.Tensor,
        mask: torch.Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        then: Callable[[dict], None] | None = None,
    ) -> None:
        self.process, self.steps, self.generator, self.then = process, steps, generator, then
        self.known, self.mask = known, mask
        self.calls = 0

    def __call__(self, info: dict) -> None:
        z: torch.Tensor = info["z"]
        p = self.process
        t = torch.tensor([float(info["t"])], dtype=torch.float64).clamp(p.t_min, p.T)
        e, _, L = p.marginal(t)
        known = self.known.to(device=z.device, dtype=z.dtype)
        mask = self.mask.to(z.device)
        eps = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype)
        fresh = apply_blocks(L[0], eps)
        fresh = fresh + e[0].to(z).reshape(1, -1, *([1] * (z.ndim - 2))) * known[:, None]
        z.copy_(torch.where(mask[:, None], fresh, z))  # in place: the sampler continues from z
        if int(info["i"]) == self.steps - 1:
            z[:, 0].copy_(torch.where(mask, known, z[:, 0]))
        self.calls += 1
        if self.then is not None:
            self.then(info)


def inpaint(
    model,
    process: LinearProcess,
    known: object,
    mask: object,
    steps: int,
    *,
    sampler: str = "lie_trotter",
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    **options,
) -> Samples:
    """Sample with the pixels where ``mask`` is True fixed to ``known`` (replacement through
    the exact kernel; module docstring). ``known`` and ``mask`` are shaped (batch, *data_shape)
    and broadcast against each other (a batch of 1 is shared; ``broadcast_condition`` expands
    one example to a batch). ``options`` go to the sampler (grid, denoise, eta, …)."""
    if sampler not in INPAINT_SAMPLERS or not resolve(sampler, model).inpaint:
        raise ValueError(
            f"inpainting needs a sampler that continues from its callback's state, for score "
            f"models: one of {', '.join(INPAINT_SAMPLERS)}, got {sampler!r}."
        )
    if options.get("corrector"):
        raise ValueError(
            "inpainting cannot use corrector=True: the correction recomputes the state the "
            "replacement callback edited; use ei or ei1 without it."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}.")
    known_t, mask_t = _as_tensor(known, "known"), _as_tensor(mask, "mask")
    try:
        if known_t.ndim < 2 or mask_t.ndim != known_t.ndim:
            raise RuntimeError
        shape = tuple(torch.broadcast_shapes(tuple(known_t.shape), tuple(mask_t.shape)))
    except RuntimeError:
        raise ValueError(
            f"known and mask must both be shaped (batch, *data_shape) and broadcast against "
            f"each other, got {tuple(known_t.shape)} and {tuple(mask_t.shape)}."
        ) from None
    known_b, mask_b = broadcast_condition(known_t, mask_t, shape)
    replace = KernelReplacement(process, known_b, mask_b, steps, generator, then=callback)
    fn = get_sampler(sampler)
    return fn(model, process, shape, steps, generator=generator, callback=replace, **options)


class ClassifierGuidance(nn.Module):
    """Score model + scale·∇_{z_n} log p(class | z_t, t) on the noisy blocks, as a model in
    score parameterisation (module docstring). ``classifier(z, t)`` returns logits (B, n).
    ``target``: one class for the whole batch or a (B,) tensor of classes."""

    parameterization = "score"

    def __init__(
        self,
        model,
        process: LinearProcess,
        classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        target: int | torch.Tensor,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        kind = getattr(model, "parameterization", "eps")
        if kind not in ("eps", "score"):
            raise ValueError(
                f"classifier guidance needs a score model (parameterization 'eps' or 'score'), "
                f"got {kind!r}."
            )
        parameterization_of(model)
        if not process.noisy_blocks:
            raise ValueError(
                f"process '{process.name}' has no noisy blocks, so there is no score to guide."
            )
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale == scale:
            raise ValueError(f"guidance scale must be a finite number, got {scale!r}.")
        if abs(float(scale)) == float("inf"):
            raise ValueError(f"guidance scale must be a finite number, got {scale!r}.")
        if isinstance(target, bool) or not isinstance(target, int | torch.Tensor):
            raise ValueError(f"target class must be an integer ≥ 0, got {target!r}.")
        if isinstance(target, int) and target < 0:
            raise ValueError(f"target class must be an integer ≥ 0, got {target!r}.")
        self.model, self.process, self.classifier = model, process, classifier
        self.target, self.scale = target, float(scale)
        self.noisy = list(process.noisy_blocks)
        self.classifier_calls = 0

    def class_gradient(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """∇_z log p(target | z, t) on every block, (B, k, *data) (autograd, also inside the
        samplers' inference mode)."""
        with torch.inference_mode(False), torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            tt = t.detach().clone() if isinstance(t, torch.Tensor) else t
            logits = self.classifier(zz, tt)
            if logits.ndim != 2 or logits.shape[0] != z.shape[0]:
                raise ValueError(
                    f"the classifier must return logits shaped (batch, classes), got "
                    f"{tuple(logits.shape)}."
                )
            n_classes = logits.shape[1]
            target = torch.as_tensor(self.target, device=z.device).long().expand(z.shape[0])
            if bool((target >= n_classes).any()) or bool((target < 0).any()):
                raise ValueError(
                    f"target class {self.target} is outside the classifier's classes "
                    f"0…{n_classes - 1}."
                )
            logp = torch.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(logp, zz)
        self.classifier_calls += 1
        return grad.detach().to(z.dtype)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.model(z, t)
        tt = t if isinstance(t, torch.Tensor) else torch.full((z.shape[0],), float(t))
        # samplers pass one time for the whole batch: one k×k kernel instead of B
        t_kernel = tt[:1] if tt.ndim == 1 and bool((tt == tt[0]).all()) else tt
        score = score_from_output(self.process, self.model, z, t_kernel.to(torch.float64), out)
        if self.scale == 0.0:
            return score
        return score + self.scale * self.class_gradient(z, tt)[:, self.noisy]
