"""`phasediff eval` and `phasediff plot …` end to end on a tiny run, plus the Python side
(phasediff.evaluation.report, .figures, .exact) on small inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasediff.cli import app
from phasediff.data import get_data
from phasediff.evaluation import report as R
from phasediff.training import Trainer, load_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """HOLD on the multi-Swiss-roll, 30 steps of a small MLP: a real run (quality irrelevant)."""
    path = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "configs/toy_hold.toml",
        [
            "train.steps=30",
            "train.tensorboard=false",
            "data.n_train=2000",
            "train.batch_size=64",
            "model.hidden=32",
            "model.depth=2",
        ],
    )
    Trainer(cfg, path, progress=False).fit()
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(res) -> None:
    assert res.exit_code == 0, res.output


def _bad(res, fragment: str) -> None:
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------- eval


def test_eval_samples_a_run_and_writes_metrics(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    res = _invoke("eval", run_dir, "--num", "300", "--steps", "4", "--out", out)
    _ok(res)
    report = json.loads((out / "metrics.json").read_text())
    assert report["samples"]["nfe"] == 4 and report["samples"]["num"] == 300
    toy = report["metrics"]["toy"]
    for key in ("sliced_w2", "exact_w2", "mmd2_rbf", "energy_distance", "mode_tvd"):
        entry = toy[key]
        assert entry["floor"] > 0 and entry["ratio"] == pytest.approx(
            entry["value"] / entry["floor"]
        )
    # 30 training steps and 4 sampler steps: far from the data, far above the floor (1.89
    # measured with the default x̂₀ guard; a trained model scores 1.0–1.5).
    assert toy["sliced_w2"]["ratio"] > 1.6
    assert report["samples"]["guarded"] >= 0
    assert (out / "samples.png").stat().st_size > 5000
    headline = json.loads(res.stdout.strip().splitlines()[0])
    assert headline["sliced_w2"] == toy["sliced_w2"]


def test_eval_reads_samples_and_scores_exact_data_at_the_floor(run_dir, tmp_path) -> None:
    # Samples = fresh data points: every ratio is that of two iid sets, close to 1 (the
    # W2-type ratios stayed in [0.6, 2.9] over 20 seeds in test_metrics).
    data = get_data("multi_swiss_roll", n_train=10)
    path = tmp_path / "s.npz"
    np.savez(path, x=data.held_out(600, seed=12345).numpy(), nfe=np.array(0))
    out = tmp_path / "e"
    _ok(_invoke("eval", run_dir, "--samples", path, "--num", "500", "--out", out))
    report = json.loads((out / "metrics.json").read_text())
    assert report["samples"] == {"file": str(path), "num": 500}
    toy = report["metrics"]["toy"]
    assert 0.4 < toy["sliced_w2"]["ratio"] < 3.0 and 0.4 < toy["exact_w2"]["ratio"] < 3.0
    # --repeats 4: the same samples against 4 references; the first is the single evaluation
    out4 = tmp_path / "e4"
    res = _invoke(
        "eval", run_dir, "--samples", path, "--num", "500", "--repeats", "4", "--out", out4
    )
    _ok(res)
    toy4 = json.loads((out4 / "metrics.json").read_text())["metrics"]["toy"]
    assert toy4["repeats"] == 4 and "repeats" not in toy
    for key in ("sliced_w2", "mode_sliced_w2"):
        assert len(toy4[key]["ratios"]) == 4
        assert toy4[key]["ratios"][0] == pytest.approx(toy[key]["ratio"], rel=1e-12)
        assert toy4[key]["ratio"] == pytest.approx(toy4[key]["value"] / toy4[key]["floor"])
    assert (
        json.loads(res.stdout.strip().splitlines()[0])["mode_sliced_w2"] == toy4["mode_sliced_w2"]
    )


def test_eval_nll_on_held_out_data(run_dir, tmp_path) -> None:
    out = tmp_path / "n"
    args = ["--num", "50", "--steps", "2", "--nll", "--nll-num", "4", "--nll-tol", "1e-3"]
    args += ["--out", out]
    _ok(_invoke("eval", run_dir, *args))
    nll = json.loads((out / "metrics.json").read_text())["nll"]
    assert nll["n"] == 4 and nll["d"] == 2 and nll["divergence"] == "exact"
    assert nll["quantity"].startswith("augmented bound")  # HOLD: k = 3
    assert math.isfinite(nll["nll_nats_per_dim"]["mean"]) and nll["nfe"] > 0


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--sampler", "ddim"], "valid samplers are"),
        (["--steps", "0"], "--steps must be an integer ≥ 1"),
        (["--num", "1"], "--num must be an integer ≥ 2"),
        (["--inception", "missing.pt"], "inception-2015-12-05.pt"),
        (["--samples", "nope.npz"], "does not exist"),
        (["--nll", "--nll-num", "0"], "--nll-num must be an integer ≥ 1"),
        (["--repeats", "0"], "--repeats must be an integer in [1, 1001), got 0"),
        (["--nll", "--nll-tol", "-1"], "--nll-tol must be a number in (0, 1)"),
    ],
)
def test_eval_bad_input(run_dir, tmp_path, extra, fragment) -> None:
    _bad(_invoke("eval", run_dir, "--out", tmp_path / "o", *extra), fragment)


def test_eval_bad_sample_files(run_dir, tmp_path) -> None:
    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, y=np.zeros((5, 2)))
    _bad(_invoke("eval", run_dir, "--samples", no_x), "has no array 'x'")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((5, 3), dtype=np.float32))
    _bad(_invoke("eval", run_dir, "--samples", wrong), "must have shape (N ≥ 2, 2)")
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((5, 2), np.nan, dtype=np.float32))
    _bad(_invoke("eval", run_dir, "--samples", nan), "5 of 5 contain NaN")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    _bad(_invoke("eval", run_dir, "--samples", text), "not a readable .npz")
    few = tmp_path / "few.npz"
    np.savez(few, x=np.zeros((5, 2), dtype=np.float32))
    _bad(_invoke("eval", run_dir, "--samples", few, "--num", "10"), "more samples than")
    _bad(_invoke("eval", tmp_path / "no_run"), "does not exist")


def test_evaluate_samples_digits(tmp_path) -> None:
    # Real training digits score at the digits-FD floor; uniform noise far above it.
    data = get_data("digits")
    real = R.evaluate_samples(data.data[:600], data, cache=tmp_path)
    assert real["digits_classifier_accuracy"] >= 0.9
    assert 0.5 < real["digits_fd"]["ratio"] < 1.5  # observed ≈ 1.0
    noise = torch.rand(600, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = R.evaluate_samples(noise, data, cache=tmp_path)
    assert fake["digits_fd"]["ratio"] > 20  # observed ≈ 45
    assert R.infer_levels(data.data) == (17, (-1.0, 1.0))
    with pytest.raises(ValueError, match="must have shape"):
        R.evaluate_samples(torch.zeros(4, 1, 4, 4), data)


# ---------------------------------------------------------------------------- plot


def test_plot_paths_and_phases(tmp_path) -> None:
    paths, phases = tmp_path / "paths.png", tmp_path / "phases.png"
    args = ["--n-paths", "3", "--steps", "40"]
    _ok(_invoke("plot", "paths", "--out", paths, "--processes", "vp,hold", *args))
    _ok(
        _invoke(
            "plot", "phases", "--out", phases, "--process", "cld", *args, "--sampler-steps", "20"
        )
    )
    assert paths.stat().st_size > 20_000 and phases.stat().st_size > 20_000
    _bad(_invoke("plot", "paths", "--processes", "vp,nope"), "valid")
    _bad(_invoke("plot", "paths", "--out", tmp_path / "x.txt"), "must end in .png")


def test_plot_snapshots_and_samples(run_dir, tmp_path) -> None:
    exact = tmp_path / "snap_exact.png"
    res = _invoke("plot", "snapshots", "--out", exact, "--steps", "6", "--num", "200")
    _ok(res)
    assert "exact score" in res.output and exact.stat().st_size > 10_000
    trained = tmp_path / "snap_run.png"
    res = _invoke("plot", "snapshots", run_dir, "--out", trained, "--steps", "6", "--num", "200")
    _ok(res)
    assert "trained run" in res.output
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    fig = tmp_path / "samples.png"
    args = ["--steps", "3", "--num", "200", "--label", "hold", "--label", "gauss", "--out", fig]
    _ok(_invoke("plot", "samples", run_dir, npz, *args))
    assert fig.stat().st_size > 10_000
    _bad(_invoke("plot", "samples", npz, "--label", "a", "--label", "b"), "one --label per source")
    _bad(_invoke("plot", "samples", tmp_path / "none.npz"), "does not exist")


# ---------------------------------------------------------------------------- dataset facts


def test_datasets_carry_their_evaluation_facts() -> None:
    """Mode centres and the feature extractor come from the DataSource, not from a switch on
    the dataset's name (thin_rolls shares the multi-Swiss-roll's centres)."""
    from phasediff.data import MULTI_SWISS_ROLL_CENTERS, DataSource

    rolls, thin = get_data("multi_swiss_roll", n_train=10), get_data("thin_rolls", n_train=10)
    assert torch.equal(rolls.mode_centers, MULTI_SWISS_ROLL_CENTERS.double())
    assert torch.equal(thin.mode_centers, rolls.mode_centers)
    gauss = get_data("8gaussians", n_train=10).mode_centers
    assert gauss.shape == (8, 2) and torch.allclose(
        gauss.norm(dim=1), torch.full((8,), 2**0.5).double()
    )
    assert get_data("moons", n_train=10).mode_centers is None
    for digits in (get_data("digits"), get_data("digits", hflip=True)):
        assert (digits.features, digits.reference_size, digits.mode_centers) == (
            "digits",
            297,
            None,
        )
    assert torch.equal(R.mode_centers("thin_rolls"), thin.mode_centers)  # the name helper
    assert R.mode_centers(thin) is thin.mode_centers and R.mode_centers("digits") is None

    # a dataset evaluation knows nothing about: its own centres and feature callable are used
    held = thin.held_out(400, seed=3)
    scored = R.evaluate_samples(thin.held_out(400, seed=4), thin)["toy"]
    assert {"mode_tvd", "mode_sliced_w2"} <= set(scored)
    custom = DataSource(
        "custom",
        held,
        "vector",
        lambda n, s: thin.held_out(n, seed=s),
        mode_centers=torch.zeros(1, 2),
    )
    assert R.evaluate_samples(held[:300], custom)["toy"]["mode_weights"] == [1.0]
    images = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    source = DataSource(
        "blobs",
        images,
        "image",
        lambda n, s: images[torch.randperm(60, generator=torch.Generator().manual_seed(s))[:n]],
        features=lambda x: x.reshape(x.shape[0], -1)[:, :3].double(),
        reference_size=60,
    )
    fd = R.evaluate_samples(images[:40], source)["features_fd"]
    assert fd["ratio"] == pytest.approx(fd["value"] / fd["floor"])
    with pytest.raises(ValueError, match="mode_centers must have shape"):
        DataSource("bad", held, "vector", custom._held_out_sampler, mode_centers=torch.zeros(2))
