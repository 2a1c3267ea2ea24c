"""ALD and MILD on trained VE runs (issue 17 item 5): `phasediff sample --sampler
annealed_langevin|mild`, its refusals, and the `phasediff bench mild` suite at a tiny size.
Quality is irrelevant here (3 training steps); the plumbing is what is tested."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasediff import bench as B
from phasediff.bench import registry
from phasediff.bench.mild import MILD
from phasediff.cli import app
from phasediff.samplers.langevin import sample_ve_model, ve_levels
from phasediff.training import Trainer, load_config

TINY = ["train.steps=3", "train.tensorboard=false", "data.n_train=500", "train.batch_size=32"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """run_suite(threads=1) sets torch's global thread count; give the other files theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train(config: str, path):
    Trainer(load_config(config, TINY), path, progress=False).fit()
    return path


@pytest.fixture(scope="module")
def ve_run(tmp_path_factory):
    return _train("configs/toy_ve.toml", tmp_path_factory.mktemp("ve"))


def _sample(run, tmp_path, *extra):
    out = tmp_path / "s.npz"
    args = ["sample", str(run), "--num", "64", "--out", str(out), "--no-progress", *extra]
    return CliRunner().invoke(app, args), out


@pytest.mark.parametrize(
    "sampler, extra, nfe",
    [
        ("annealed_langevin", ["--steps-per-level", "3"], 5 * 3 + 1),
        ("mild", ["--gamma", "0.7", "--consistent-noise", "--eps", "1e-4"], 5 * 2 + 1),
    ],
)
def test_sample_ald_and_mild_on_a_ve_run(ve_run, tmp_path, sampler, extra, nfe):
    res, out = _sample(ve_run, tmp_path, "--sampler", sampler, "--levels", "5", *extra)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    data = np.load(out)
    assert data["x"].shape == (64, 2) and report["nfe"] == int(data["nfe"]) == nfe
    assert report["grid"] is None and np.isfinite(data["x"]).all()
    # the σ's of the levels are the times: the prior's σ down to σ_min = 0.01
    assert data["times"].shape == (5,) and data["times"][-1] == pytest.approx(0.01)


def test_sample_ve_model_is_the_cli_path(ve_run):
    from phasediff.training import load_trained

    model, process, _, _ = load_trained(ve_run)
    sigmas = ve_levels(process, 4)
    assert sigmas[0] == pytest.approx(50.0, rel=1e-6) and float(sigmas[-1]) == pytest.approx(0.01)
    a = sample_ve_model(
        model, process, (8, 2), "mild", levels=4, generator=torch.Generator().manual_seed(0)
    )
    assert a.nfe == 9 and a.x.shape == (8, 2)  # MILD's default T = 2, plus the denoising


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sampler", "mild", "--grid", "uniform"], "--grid does not apply to mild"),
        (["--sampler", "annealed_langevin", "--gamma", "0.5"], "ALD takes neither"),
        (["--sampler", "mild", "--gamma", "1.0"], "0 ≤ gamma < 1"),
        (["--sampler", "mild", "--levels", "1"], "L must be an integer ≥ 2"),
        (["--sampler", "mild", "--guidance-class", "1"], "supports neither --inpaint"),
    ],
)
def test_sample_langevin_bad_options(ve_run, tmp_path, extra, message):
    res, _ = _sample(ve_run, tmp_path, *extra)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    "config, message",
    [
        ("configs/toy_vp.toml", "needs a model trained on the VE process"),
        ("configs/toy_ohgf.toml", "this run is a velocity model"),
    ],
)
def test_sample_langevin_refuses_other_runs(tmp_path, config, message):
    run = _train(config, tmp_path / "run")
    res, _ = _sample(run, tmp_path, "--sampler", "annealed_langevin", "--levels", "3")
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_sample_help_lists_the_langevin_samplers():
    res = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for word in ("annealed_langevin", "mild", "--levels", "--steps-per-level", "--gamma"):
        assert word in res.output


def test_bench_mild_plumbing(tmp_path, monkeypatch):
    toy = dataclasses.replace(MILD.models[0], reference=("em", 4))
    small = dataclasses.replace(MILD, models=(toy,), levels=(3,), steps_per_level=(2, 5))
    monkeypatch.setitem(registry.REGISTRY, "mild", small)
    docs = tmp_path / "docs" / "benchmarks.md"
    kw = dict(
        runs=tmp_path / "runs",
        steps=3,
        num=64,
        models="toy",
        docs=docs,
        img_dir=tmp_path / "docs" / "img",
        threads=1,
        progress=False,
    )
    res = B.run_suite("mild", **kw)
    cells = {(c["sampler"], c["L"], c["T"]): c for c in res["cells"]}
    expected = {(v, 3, T) for v in ("ald", "mild", "mildc") for T in (2, 5)}
    assert set(cells) == expected | {("em", None, None)}
    for (v, L, T), cell in cells.items():
        assert cell["nfe"] == (4 if v == "em" else L * T + 1)
    ald, mild = cells[("ald", 3, 2)], cells[("mild", 3, 2)]
    if ald["metrics"] and mild["metrics"]:  # same seed, another update: other samples
        assert ald["metrics"]["sliced_w2"]["value"] != mild["metrics"]["sliced_w2"]["value"]
    block = B.extract_blocks(docs.read_text())["mild"]
    assert "| L | T | NFE | ALD | MILD (γ = 0.9) | MILD-c (γ = 0.7, consistent noise) |" in block
    assert "| 3 | 5 | 16 |" in block and "Poster's claim" in block
    assert res["command"] in block and "--steps 3" in res["command"]
    assert (tmp_path / "docs" / "img" / "bench_mild.png").read_bytes()[:4] == b"\x89PNG"
    again = B.run_suite("mild", **kw)  # the run and every cell are reused
    assert again["models"]["toy"]["reused"] and again["cells"] == res["cells"]
