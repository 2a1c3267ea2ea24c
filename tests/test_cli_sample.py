"""`phasediff sample` and `phasediff demo` end to end (tiny budgets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phasediff.cli import app
from phasediff.training import Trainer, load_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "configs/toy_hold.toml",
        ["train.steps=20", "train.tensorboard=false", "data.n_train=2000", "train.batch_size=64"],
    )
    Trainer(cfg, path, progress=False).fit()
    return path


@pytest.mark.parametrize("sampler", ["lie_trotter", "strang", "em", "heun"])
def test_sample_writes_npz_and_png(run_dir, tmp_path, sampler):
    out = tmp_path / "s.npz"
    args = ["sample", str(run_dir), "--sampler", sampler, "--steps", "5", "--num", "64"]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--trajectory"])
    assert res.exit_code == 0, res.output
    data = np.load(out)
    assert data["x"].shape == (64, 2)
    assert int(data["nfe"]) == json.loads(res.stdout.strip().splitlines()[-1])["nfe"]
    assert data["trajectory"].shape == (6, 64, 3, 2)
    assert out.with_suffix(".png").stat().st_size > 5000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sampler", "ddim"], "valid samplers are: em, euler, heun, dopri5, lie_trotter, strang"),
        (["--steps", "0"], "must be ≥ 1"),
        (["--out", "x.csv"], "--out must end in .npz"),
        (["--grid", "cosine"], "valid grids are"),
    ],
)
def test_sample_bad_input(run_dir, tmp_path, extra, message):
    res = CliRunner().invoke(
        app, ["sample", str(run_dir), "--out", str(tmp_path / "a.npz"), *extra]
    )
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_sample_missing_checkpoint(tmp_path):
    res = CliRunner().invoke(app, ["sample", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_demo_with_a_tiny_budget(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "demo",
            "--out",
            str(tmp_path),
            "--steps",
            "30",
            "--batch-size",
            "64",
            "--sampler-steps",
            "5",
            "--num",
            "2000",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["nfe"] == 5 and report["sampler"] == "ei1c" and report["final"] == "denoise"
    assert report["batch_size"] == 64 and report["train_steps"] == 30
    # the batch reached the trainer: the run's recorded config trains on 64 points a step
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["batch_size"] == 64
    assert {"value", "floor", "ratio"} <= set(report["metrics"]["sliced_w2"])
    for name in ("samples.png", "trajectories.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_sample_noise_floor_sets_where_the_denoising_jump_is_made(run_dir, tmp_path):
    from phasediff.objectives.preconditioning import unwrap
    from phasediff.samplers.final import noise_floor_time
    from phasediff.training import load_trained

    model, process, _, _ = load_trained(run_dir)
    args = ["sample", str(run_dir), "--sampler", "lie_trotter", "--steps", "20", "--num", "16"]
    reports = {}
    for floor in ("0", "0.02"):
        out = tmp_path / f"f{floor}.npz"
        res = CliRunner().invoke(app, [*args, "--out", str(out), "--noise-floor", floor])
        assert res.exit_code == 0, res.output
        reports[floor] = json.loads(res.stdout.strip().splitlines()[-1])
    # hold: t_f(0.02) ≈ 0.03 lies far above the quadratic grid's t_{N−1} ≈ 0.0035, so the
    # jump moves there; with 0 it is made from the grid's own t_{N−1}
    t_f = noise_floor_time(process, float(unwrap(model).sigma_data), 0.02)
    assert reports["0.02"]["jump_t"] == pytest.approx(t_f, rel=1e-9)
    assert reports["0"]["jump_t"] < 0.2 * t_f
    res = CliRunner().invoke(
        app,
        [*args, "--out", str(tmp_path / "x.npz"), "--final", "integrate", "--noise-floor", "0.01"],
    )
    assert res.exit_code == 2 and "noise_floor belongs to the denoising final step" in res.output
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "y.npz"), "--noise-floor", "2"])
    assert res.exit_code == 2 and "noise_floor must be a number in [0, 1)" in res.output


def test_inpaint_without_a_sampler_falls_back_to_one_that_can(run_dir, tmp_path):
    # the recommended ei1c cannot continue from its callback's edited state; inpainting with no
    # --sampler takes lie_trotter instead of failing (docs/images.md)
    known = tmp_path / "known.npy"
    mask = tmp_path / "mask.npy"
    np.save(known, np.zeros((1, 2), dtype=np.float32))
    np.save(mask, np.array([[True, False]]))
    out = tmp_path / "i.npz"
    args = ["sample", str(run_dir), "--steps", "5", "--num", "8", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--inpaint", str(mask), "--known", str(known)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["sampler"] == "lie_trotter"
    np.testing.assert_array_equal(np.load(out)["x"][:, 0], 0.0)  # the known pixel is pinned


def test_demo_cli_defaults_are_the_demo_constants():
    """`phasediff demo` with no options runs exactly what phasediff.demo documents."""
    import inspect

    from phasediff import cli, demo

    params = inspect.signature(cli.demo_command).parameters
    assert params["steps"].default == demo.DEMO_STEPS
    assert params["batch_size"].default == demo.DEMO_BATCH
    assert params["sampler"].default == demo.DEMO_SAMPLER
    assert params["sampler_steps"].default == demo.DEMO_SAMPLER_STEPS
