"""Fréchet distances for images, offline (docs/design.md §6).

* ``frechet_distance``: FD between N(μ₁, Σ₁) and N(μ₂, Σ₂),
  |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}), in float64 with ``scipy.linalg.sqrtm``.
* **Digits FD**: the FD of the penultimate features of a small classifier trained on
  scikit-learn's 8×8 digits (deterministic seed, a few seconds on a CPU, cached as
  safetensors under ``cache_dir()``); needs no download.
* **Inception FID**: the standard FID from the TorchScript Inception-v3 feature network
  ``inception-2015-12-05.pt`` used by StyleGAN2-ADA, EDM and clean-fid, loaded from a path
  the user gives (``torch.jit.load``; nothing is downloaded and torchvision is not used).

Every FD here is reported with its noise floor (``fd_with_floor``): the held-out images are
split into two halves A and B many times; value = FD(samples, A) and floor = FD(B, A) with
as many samples as B has images, averaged over the splits, so a perfect sampler has
ratio ≈ 1.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phasediff.files import atomic_write_bytes
from phasediff.validation import check_int

__all__ = [
    "DIGITS_CLASSIFIER_FILE",
    "FEATURE_EXTRACTORS",
    "INCEPTION_FILE",
    "FeatureExtractor",
    "INCEPTION_URL",
    "cache_dir",
    "digits_classifier",
    "digits_features",
    "fd_with_floor",
    "feature_statistics",
    "frechet_distance",
    "images_to_uint8",
    "inception_features",
    "load_inception",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
"""Name of the TorchScript Inception-v3 feature network of StyleGAN2-ADA / EDM / clean-fid."""

INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt"
)
"""Where that file is usually obtained (phasediff never downloads it)."""

DIGITS_CLASSIFIER_FILE = "digits_classifier_v1.safetensors"
_DIGITS_VERSION = 1
_DIGITS_SEED = 0
_DIGITS_STEPS = 400
_DIGITS_BATCH = 128
_FEATURE_DIM = 64


# ---------------------------------------------------------------------------- FD


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of features (n, f) in float64; covariance with 1/(n − 1)."""
    f = _as_features(features, "features")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _as_features(features: object, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(
            f"{name} must be a 2-D array (n ≥ 2, features), got shape {tuple(f.shape)}."
        )
    if not np.isfinite(f).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf.")
    return f


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """|μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}: the squared W2 between the Gaussians.

    float64; the matrix square root by ``scipy.linalg.sqrtm``. If Σ₁Σ₂ is numerically
    singular (fewer samples than features) a 1e-6 ridge is added to both covariances, as in
    the reference FID code; a tiny imaginary part from round-off is dropped.
    """
    from scipy import linalg

    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    f = mu1.shape[0]
    if mu2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
        raise ValueError(
            f"frechet_distance needs means of shape (f,) and covariances (f, f) for one f, "
            f"got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}."
        )
    for value, name in ((mu1, "mu1"), (mu2, "mu2"), (s1, "sigma1"), (s2, "sigma2")):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} must be finite, got NaN or Inf.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            ridge = 1e-6 * np.eye(f)
            covmean = linalg.sqrtm((s1 + ridge) @ (s2 + ridge))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def fd_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FD between the Gaussians fitted to two feature sets."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def fd_with_floor(
    sample_features: np.ndarray | torch.Tensor,
    held_out_features: np.ndarray | torch.Tensor,
    *,
    splits: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """FD of samples against held-out real data, with its noise floor.

    For each of ``splits`` random halvings of the held-out set into A (⌈m/2⌉) and B (⌊m/2⌋):
    value_r = FD(S_r, A) with S_r the next |B| samples (cycling through the samples), and
    floor_r = FD(B, A). Returns means over r: {"value", "floor", "ratio", "n_per_set",
    "splits"}; ratio ≈ 1 for a sampler of the data law, ≫ 1 for a poor one.
    """
    s = _as_features(sample_features, "sample_features")
    h = _as_features(held_out_features, "held_out_features")
    if s.shape[1] != h.shape[1]:
        raise ValueError(
            f"sample and held-out features must have the same width, got {s.shape[1]} "
            f"and {h.shape[1]}."
        )
    splits = check_int(splits, "splits")
    m = h.shape[0]
    if m < 4:
        raise ValueError(f"the held-out set needs at least 4 images, got {m}.")
    half = m // 2
    rng = np.random.default_rng(seed)
    values, floors = [], []
    offset = 0
    for _ in range(splits):
        order = rng.permutation(m)
        a, b = h[order[half:]], h[order[:half]]
        idx = (offset + np.arange(half)) % s.shape[0]
        offset = (offset + half) % s.shape[0]
        values.append(fd_between(s[idx], a))
        floors.append(fd_between(b, a))
    value, floor = float(np.mean(values)), float(np.mean(floors))
    return {
        "value": value,
        "floor": floor,
        "ratio": value / floor if floor > 0 else None,
        "n_per_set": half,
        "splits": splits,
    }


# ---------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """$PHASEDIFF_CACHE, else $XDG_CACHE_HOME/phasediff, else ~/.cache/phasediff."""
    if os.environ.get("PHASEDIFF_CACHE"):
        return Path(os.environ["PHASEDIFF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "phasediff"


# ---------------------------------------------------------------------------- digits


class _DigitsNet(torch.nn.Module):
    """64 → 128 → 64 → 10 with ReLUs; input 8×8 grey levels in [−1, 1]. The features are
    the 64 pre-activations of the last hidden layer (no dead ReLU units, so their covariance
    is non-singular)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 128)
        self.feature = torch.nn.Linear(128, _FEATURE_DIM)
        self.head = torch.nn.Linear(_FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(torch.relu(self.hidden(x.reshape(x.shape[0], 64))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)))


def _train_digits_net() -> tuple[_DigitsNet, float]:
    """AdamW on minibatches of the 1500 training digits (load_digits seed 0), fixed seeds."""
    from phasediff.data import load_digits

    x_train, y_train = load_digits("train", seed=0)
    x_test, y_test = load_digits("test", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_DIGITS_SEED)
        net = _DigitsNet()
        noise = torch.Generator().manual_seed(_DIGITS_SEED + 1)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
        for _ in range(_DIGITS_STEPS):
            index = torch.randint(0, x_train.shape[0], (_DIGITS_BATCH,), generator=noise)
            # Light pixel noise (σ = 0.1) makes the features smooth around the data.
            inputs = x_train[index] + 0.1 * torch.randn((_DIGITS_BATCH, 1, 8, 8), generator=noise)
            loss = torch.nn.functional.cross_entropy(net(inputs), y_train[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    return net, accuracy


_DIGITS_MEMO: dict[str, tuple[_DigitsNet, dict[str, Any]]] = {}


def digits_classifier(
    cache: str | Path | None = None, *, retrain: bool = False
) -> tuple[_DigitsNet, dict[str, Any]]:
    """(network, info) of the digits feature classifier; info has accuracy, path, trained.

    Loaded from ``<cache>/digits_classifier_v1.safetensors`` (``cache`` defaults to
    ``cache_dir()``), or trained (≈ seconds) and saved there when absent, unreadable or of
    another version. accuracy is on the 297 held-out digits of ``load_digits(seed=0)``.
    """
    from safetensors import safe_open
    from safetensors.torch import save

    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / DIGITS_CLASSIFIER_FILE
    key = str(path.resolve()) if path.exists() else str(path)
    if not retrain and key in _DIGITS_MEMO:
        return _DIGITS_MEMO[key]
    net, info = None, None
    if path.exists() and not retrain:
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
            if int(meta.get("version", -1)) == _DIGITS_VERSION:
                net = _DigitsNet()
                net.load_state_dict(state)
                net.eval()
                info = {"accuracy": float(meta["accuracy"]), "path": str(path), "trained": False}
        except Exception:  # a corrupt or foreign cache file is simply rebuilt
            net, info = None, None
    if net is None:
        net, accuracy = _train_digits_net()
        info = {"accuracy": accuracy, "path": str(path), "trained": True}
        meta = {
            "version": str(_DIGITS_VERSION),
            "accuracy": repr(accuracy),
            "seed": str(_DIGITS_SEED),
            "architecture": json.dumps([64, 128, _FEATURE_DIM, 10]),
        }
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
            atomic_write_bytes(path, save(tensors, meta))
        except OSError:
            info["path"] = None  # an unwritable cache only costs a retrain next time
    _DIGITS_MEMO[str(path.resolve()) if path.exists() else str(path)] = (net, info)
    return net, info  # type: ignore[return-value]


def _check_images(images: object, name: str, channels: tuple[int, ...] | None = None):
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor shaped (N, C, H, W).")
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"{name} must be shaped (N, C, H, W), got {tuple(images.shape)}.")
    if channels is not None and images.shape[1] not in channels:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, channels))} channels, got {images.shape[1]}."
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} must be finite, got NaN or Inf.")
    return images


def digits_features(
    images: torch.Tensor, *, cache: str | Path | None = None, batch_size: int = 2048
) -> np.ndarray:
    """64 penultimate features (float64, (N, 64)) of 8×8 digit images in [−1, 1].

    Images (N, 1, 8, 8) are clamped to [−1, 1] first (samples may overshoot slightly).
    """
    images = _check_images(images, "images", (1,))
    if tuple(images.shape[2:]) != (8, 8):
        raise ValueError(f"digits images must be 8×8, got {tuple(images.shape[2:])}.")
    net, _ = digits_classifier(cache)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].detach().float().cpu().clamp(-1, 1)
            out.append(net.features(chunk).double().numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class FeatureExtractor:
    """A named feature extractor of image Fréchet distances (``DataSource.features``):
    ``features(images, cache=...)`` → (N, F) features, and ``info(cache)`` → extra facts
    reported next to the distance (e.g. the classifier's accuracy)."""

    features: Callable[..., np.ndarray]
    info: Callable[[str | Path | None], dict[str, Any]] | None = None


def _digits_info(cache: str | Path | None) -> dict[str, Any]:
    _, info = digits_classifier(cache)
    return {"digits_classifier_accuracy": info["accuracy"]}


FEATURE_EXTRACTORS: dict[str, FeatureExtractor] = {
    "digits": FeatureExtractor(digits_features, _digits_info),
}
"""Feature extractors by the name a ``DataSource`` gives in ``features`` (data/registry.py)."""


# ---------------------------------------------------------------------------- Inception


def _missing_inception(path: object) -> str:
    return (
        f"the Inception feature file {str(path)!r} does not exist; Inception FID needs the "
        f"TorchScript Inception-v3 network {INCEPTION_FILE!r} (the file StyleGAN2-ADA, EDM "
        f"and clean-fid use), usually obtained from {INCEPTION_URL} — download it yourself "
        "and pass its path with --inception (phasediff never downloads it)."
    )


_INCEPTION_MEMO: dict[str, torch.jit.ScriptModule] = {}


def load_inception(path: str | Path | None, device: str | torch.device = "cpu"):
    """The TorchScript feature network at ``path`` (``torch.jit.load``), in eval mode.

    Raises a one-sentence ValueError naming the needed file when ``path`` is None or absent,
    and when the file is not TorchScript (e.g. pytorch-fid's state dict
    ``pt_inception-2015-12-05-6726825d.pth``).
    """
    if path is None or not Path(path).is_file():
        raise ValueError(_missing_inception(path))
    key = f"{Path(path).resolve()}@{device}"
    if key not in _INCEPTION_MEMO:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
                net = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # torch raises RuntimeError / ValueError on non-TorchScript
            reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "unknown"
            raise ValueError(
                f"{str(path)!r} is not a loadable TorchScript module ({reason}); pass the "
                f"TorchScript file {INCEPTION_FILE!r} from {INCEPTION_URL}, not a state dict "
                "such as pytorch-fid's pt_inception-2015-12-05-6726825d.pth."
            ) from None
        _INCEPTION_MEMO[key] = net.eval()
    return _INCEPTION_MEMO[key]


def images_to_uint8(images: torch.Tensor, data_range: tuple[float, float] = (-1.0, 1.0)):
    """Images in ``data_range`` → uint8 (N, 3, H, W) in [0, 255] (grey repeated to RGB)."""
    images = _check_images(images, "images", (1, 3))
    lo, hi = data_range
    scaled = ((images.detach().float().cpu() - lo) / (hi - lo) * 255.0).round().clamp(0, 255)
    out = scaled.to(torch.uint8)
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


def inception_features(
    images: torch.Tensor,
    path: str | Path | None,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """2048-d pool features (float64 (N, f)) of images, as StyleGAN2-ADA/EDM compute them.

    Images are converted to uint8 RGB (``images_to_uint8``) and passed at their own size as
    ``net(x, return_features=True)``; the standard network resizes to 299×299 inside.
    """
    net = load_inception(path, device)
    x = images_to_uint8(images, data_range)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size].to(device)
            try:
                feats = net(chunk, return_features=True)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                raise ValueError(
                    f"the network in {str(path)!r} does not accept net(images, "
                    f"return_features=True) like {INCEPTION_FILE!r} ({reason})."
                ) from None
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
                raise ValueError(
                    f"the network in {str(path)!r} must return features shaped (N, f), got "
                    f"{getattr(feats, 'shape', type(feats).__name__)}."
                )
            out.append(feats.detach().double().cpu().numpy())
    return np.concatenate(out)
