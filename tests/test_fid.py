"""Fréchet distances (phasediff.evaluation.fid): Gaussian closed forms, the digits feature
classifier and its cache, and the TorchScript Inception loader (with a tiny stand-in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from phasediff.data import load_digits
from phasediff.evaluation import fid

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_spd(f: int, seed: int) -> np.ndarray:
    a = _rng(seed).normal(size=(f, f))
    return a @ a.T / f + 0.1 * np.eye(f)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ---------------------------------------------------------------------------- closed forms


def test_frechet_distance_closed_forms() -> None:
    # 1-D: W2² between N(m1, s1²) and N(m2, s2²) is (m1 − m2)² + (s1 − s2)².
    got = fid.frechet_distance(np.array([0.3]), np.array([[4.0]]), np.array([-0.2]), [[0.25]])
    assert got == pytest.approx(0.25 + (2.0 - 0.5) ** 2, rel=1e-12)
    # Commuting covariances (same eigenvectors Q): Σ(√a_i − √b_i)² plus the mean term.
    q, _ = np.linalg.qr(_rng(0).normal(size=(6, 6)))
    a, b = np.linspace(0.5, 3.0, 6), np.linspace(2.0, 0.1, 6)
    mu1, mu2 = _rng(1).normal(size=6), _rng(2).normal(size=6)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    got = fid.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    # General case: tr(Σ1Σ2)^{1/2} = tr(Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2} (similar matrices), the
    # symmetric form computed here by eigh only.
    s1, s2 = _random_spd(10, 3), _random_spd(10, 4)
    r1 = _psd_sqrt(s1)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1))
    assert fid.frechet_distance(np.zeros(10), s1, np.zeros(10), s2) == pytest.approx(
        expected, rel=1e-8
    )
    assert fid.frechet_distance(mu1, s1[:6, :6], mu1, s1[:6, :6]) == pytest.approx(0, abs=1e-9)


def test_fd_of_gaussian_samples_matches_closed_form() -> None:
    # Samples of N(0, I_4) and N(μ, diag(b)), n = 20 000: the plug-in FD has bias O(f²/n)
    # ≈ 1e-3 and SD ≈ 0.03 here (the mean term: 2|Δμ|·SE(mean) = 2·1·0.007), so 0.1 is
    # > 3 SD; missing the covariance term (0.39) would fail.
    n, f = 20_000, 4
    mu = np.array([1.0, 0.0, 0.0, 0.0])
    b = np.array([0.25, 1.0, 2.0, 1.0])
    x = _rng(5).normal(size=(n, f))
    y = mu + np.sqrt(b) * _rng(6).normal(size=(n, f))
    expected = 1.0 + float(np.sum((1 - np.sqrt(b)) ** 2))
    assert fid.fd_between(x, y) == pytest.approx(expected, abs=0.1)
    mean, cov = fid.feature_statistics(torch.from_numpy(y))
    assert np.allclose(cov, np.cov(y, rowvar=False)) and np.allclose(mean, y.mean(0))


def test_fd_with_floor_on_gaussian_features() -> None:
    # Samples from the held-out law: value and floor estimate the same FD (ratio ≈ 1); a
    # shifted law (|Δμ|² = 1 ≫ floor ≈ f²/n-level bias) gives a large ratio.
    held = _rng(7).normal(size=(400, 3))
    same = fid.fd_with_floor(_rng(8).normal(size=(1000, 3)), held, splits=16)
    assert same["n_per_set"] == 200 and same["splits"] == 16
    assert 0.5 < same["ratio"] < 2.0
    shifted = fid.fd_with_floor(_rng(9).normal(size=(1000, 3)) + [1.0, 0, 0], held)
    assert shifted["ratio"] > 10.0


# ---------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_digits_classifier_accuracy_and_cache(digits_cache: Path) -> None:
    net, info = fid.digits_classifier(digits_cache)
    path = digits_cache / fid.DIGITS_CLASSIFIER_FILE
    assert info["trained"] and path.is_file() and info["path"] == str(path)
    # Accuracy on the 297 held-out digits (never seen in training), recomputed here.
    x_test, y_test = load_digits("test", seed=0)
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    assert accuracy == pytest.approx(info["accuracy"])
    assert accuracy >= 0.9  # observed 0.980
    # A fresh process would load the file: clear the memo and compare features exactly.
    fid._DIGITS_MEMO.clear()
    net2, info2 = fid.digits_classifier(digits_cache)
    assert not info2["trained"] and info2["accuracy"] == pytest.approx(info["accuracy"])
    with torch.no_grad():
        assert torch.equal(net.features(x_test), net2.features(x_test))
    # A corrupt cache file is rebuilt rather than trusted.
    fid._DIGITS_MEMO.clear()
    path.write_bytes(b"not a safetensors file")
    _, info3 = fid.digits_classifier(digits_cache)
    assert info3["trained"] and info3["accuracy"] == pytest.approx(info["accuracy"], abs=0.02)


def test_cache_dir_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHASEDIFF_CACHE", str(tmp_path / "pd"))
    assert fid.cache_dir() == tmp_path / "pd"
    monkeypatch.delenv("PHASEDIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fid.cache_dir() == tmp_path / "xdg" / "phasediff"


def test_digits_fd_real_vs_noise(digits_cache: Path) -> None:
    # Held-out real digits vs the training digits: a small FD (observed ≈ 2.5); uniform
    # noise images: ≈ 700. The ordering is the sanity check.
    x_train, _ = load_digits("train", seed=0)
    x_test, _ = load_digits("test", seed=0)
    f_train = fid.digits_features(x_train, cache=digits_cache)
    f_test = fid.digits_features(x_test, cache=digits_cache)
    noise = torch.rand(x_test.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f_noise = fid.digits_features(noise, cache=digits_cache)
    real = fid.fd_between(f_test, f_train)
    fake = fid.fd_between(f_noise, f_train)
    assert f_train.shape == (1500, 64) and f_train.dtype == np.float64
    assert real < 0.02 * fake
    # With the noise floor: real training digits sit at the floor, noise far above it.
    assert fid.fd_with_floor(f_train, f_test)["ratio"] < 1.5
    assert fid.fd_with_floor(f_noise, f_test)["ratio"] > 20


# ---------------------------------------------------------------------------- Inception


class _TinyFeatures(torch.nn.Module):
    """Stand-in with the calling convention of inception-2015-12-05.pt: uint8 (N, 3, H, W)
    in, net(x, return_features=True) → (N, 4) features (per-channel means and a max)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        xf = x.to(torch.float32)
        feats = torch.cat([xf.mean(dim=(2, 3)), xf.amax(dim=(1, 2, 3)).unsqueeze(1)], dim=1)
        if return_features:
            return feats
        return feats.sum(dim=1, keepdim=True)


def test_inception_loader_with_a_tiny_torchscript(tmp_path: Path) -> None:
    path = tmp_path / fid.INCEPTION_FILE
    torch.jit.script(_TinyFeatures()).save(str(path))
    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images[0] = 1.0  # white → 255
    images[1] = -1.0  # black → 0
    feats = fid.inception_features(images, path, batch_size=3)
    assert feats.shape == (10, 4) and feats.dtype == np.float64
    # Grey images are repeated to RGB and mapped [−1, 1] → {0, …, 255} by rounding.
    expected = ((images + 1) * 127.5).round().mean(dim=(1, 2, 3)).double().numpy()
    assert np.allclose(feats[:, 0], expected) and np.allclose(feats[:, 2], expected)
    assert feats[0, 3] == 255.0 and feats[1, 3] == 0.0
    # FD of a set with itself is 0; the loader is memoised per path.
    assert fid.fd_between(feats, feats) == pytest.approx(0.0, abs=1e-9)
    assert fid.load_inception(path) is fid.load_inception(path)


def test_inception_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as exc:
        fid.load_inception(tmp_path / "nope.pt")
    msg = str(exc.value)
    assert fid.INCEPTION_FILE in msg and fid.INCEPTION_URL in msg and "never downloads" in msg
    assert "\n" not in msg and msg.endswith(".")
    with pytest.raises(ValueError, match="inception-2015-12-05.pt"):
        fid.load_inception(None)
    bad = tmp_path / "state_dict.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a loadable TorchScript module"):
        fid.load_inception(bad)
    # A TorchScript module without the return_features keyword is refused clearly.
    plain = tmp_path / "plain.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(plain))
    with pytest.raises(ValueError, match="return_features=True"):
        fid.inception_features(torch.zeros(2, 1, 8, 8), plain)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: fid.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "(f, f)"),
        (lambda: fid.feature_statistics(np.zeros((1, 3))), "n ≥ 2"),
        (lambda: fid.fd_between(np.zeros((4, 2)), np.full((4, 2), np.nan)), "finite"),
        (lambda: fid.fd_with_floor(np.zeros((5, 2)), np.zeros((5, 3))), "same width"),
        (lambda: fid.fd_with_floor(np.zeros((5, 2)), np.zeros((3, 2))), "at least 4"),
        (lambda: fid.digits_features(torch.zeros(3, 1, 4, 4)), "must be 8×8"),
        (lambda: fid.digits_features(torch.zeros(3, 64)), "(N, C, H, W)"),
        (lambda: fid.images_to_uint8(torch.zeros(2, 2, 8, 8)), "1 or 3 channels"),
    ],
)
def test_validation_messages(call, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        call()
    assert fragment in str(exc.value) and str(exc.value).endswith(".")
