"""Sample sanity (issue 17 item 6; docs/samplers.md, "Sample sanity"): `phasediff sample` and
`TrainedRun.sample` count samples that are not finite or lie far outside the training data's
range (recorded in the run at training start), report the counts in the output and warn in
one line; NaN is never written silently."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from phasediff.data.sanity import (
    DATA_RANGE_FILE,
    DataRange,
    SampleWarning,
    check_samples,
    run_data_range,
)

TINY = ["train.steps=3", "train.tensorboard=false", "data.n_train=256", "train.batch_size=32"]
TINY += ["model.hidden=16", "model.depth=2", "train.sample_every=0", "train.log_every=3"]


def test_counts_non_finite_and_far_rows():
    data = torch.tensor([[0.0, -1.0], [1.0, 1.0], [0.5, 0.0]])
    rng = DataRange.of(data)
    assert rng.low.tolist() == [0.0, -1.0] and rng.high.tolist() == [1.0, 1.0] and rng.n == 3
    x = torch.tensor(
        [
            [0.5, 0.5],  # inside
            [1.9, -2.9],  # outside the data, but within one width (1 and 2) of it: not far
            [2.1, 0.0],  # more than one width (1) beyond the max of dimension 0: far
            [float("nan"), 0.0],
            [0.0, float("inf")],
            [1e6, 1e6],  # exploded
        ]
    )
    check = check_samples(x, rng)
    assert (check.num, check.non_finite, check.far, check.bad) == (6, 2, 2, 4)
    assert check.ok.tolist() == [True, True, False, False, False, False]
    text = check.message()
    assert "2 of 6 samples are not finite (NaN/Inf)" in text and "2 of 6 lie far" in text
    assert "\n" not in text
    assert check_samples(x[:2], rng).message() is None
    with pytest.warns(SampleWarning, match="2 of 6 samples are not finite"):
        check.warn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_samples(x[:2], rng).warn()  # nothing to say: no warning


def test_a_constant_dimension_counts_with_the_median_width():
    """Pixels that never vary in the training set (image borders) must not flag every sample."""
    data = torch.zeros(10, 5)
    data[:, 1:] = torch.linspace(-1, 1, 10)[:, None]  # dims 1–4 have width 2, dim 0 width 0
    check = check_samples(torch.tensor([[1.5, 0.0, 0.0, 0.0, 0.0]]), DataRange.of(data))
    assert check.far == 0
    assert check_samples(torch.tensor([[2.5, 0, 0, 0, 0]]), DataRange.of(data)).far == 1


def test_the_range_round_trips_and_shapes_are_checked(tmp_path):
    rng = DataRange.of(torch.randn(20, 1, 2, 3))
    back = DataRange.from_dict(json.loads(json.dumps(rng.as_dict())))
    assert torch.equal(back.low, rng.low) and torch.equal(back.high, rng.high)
    with pytest.raises(ValueError, match="shape"):
        check_samples(torch.zeros(4, 6), rng)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from phasediff.training import Trainer, load_config

    path = tmp_path_factory.mktemp("run")
    Trainer(load_config("configs/toy_hold.toml", TINY), path, progress=False).fit()
    return path


def test_training_records_the_range_and_old_runs_fall_back(run_dir, tmp_path):
    from phasediff.training import load_trained

    recorded = json.loads((run_dir / DATA_RANGE_FILE).read_text())
    assert recorded["shape"] == [2] and recorded["n"] == 256 and recorded["units"] == "model"
    data = load_trained(run_dir)[3].data
    rng, source = run_data_range(run_dir, data)
    assert source == "recorded" and torch.allclose(rng.low, data.double().amin(0))
    checkpoint = next((run_dir / "checkpoints").glob("*.json"))
    assert run_data_range(checkpoint, data)[1] == "recorded"  # a checkpoint file finds it too
    old = tmp_path / "old"  # a run made before data_range.json existed
    old.mkdir()
    rng, source = run_data_range(old, data)
    assert source == "training data" and torch.allclose(rng.high, data.double().amax(0))
    (old / DATA_RANGE_FILE).write_text("{not json")
    assert run_data_range(old, data)[1] == "training data"


def _poisoned(model):
    """The model with row 0 of its output NaN and row 1 huge: a diverged sample and an
    exploded one, as a long-trained model on thin data produced (issue 17)."""

    class Poisoned(torch.nn.Module):
        parameterization = model.parameterization

        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, z, t):
            out = self.inner(z, t).clone()
            out[0] = float("nan")
            out[1] = 1e12
            return out

    return Poisoned()


@pytest.fixture
def poisoned_sampler(monkeypatch):
    """`phasediff sample --sampler em` on the poisoned model."""
    from phasediff.samplers import registry

    em = registry.SAMPLERS["em"]
    fake = lambda model, *args, **kwargs: em(_poisoned(model), *args, **kwargs)  # noqa: E731
    monkeypatch.setitem(registry.SAMPLERS, "em", fake)


def _sample(run_dir, out, *extra):
    from typer.testing import CliRunner

    from phasediff.cli import app

    args = ["sample", str(run_dir), "--sampler", "em", "--steps", "30", "--num", "32"]
    return CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress", *extra])


def test_the_cli_warns_counts_and_keeps_or_drops(run_dir, tmp_path, poisoned_sampler, monkeypatch):
    from phasediff.training import plots

    res = _sample(run_dir, tmp_path / "s.npz", "--no-x0-guard")  # the guard: at the end
    assert res.exit_code == 0, res.output
    warning = [line for line in res.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, res.stderr
    assert "1 of 32 samples are not finite (NaN/Inf)" in warning[0]
    assert "1 of 32 lie far outside the training data's range" in warning[0]
    assert "kept in" in warning[0] and "--drop-bad" in warning[0]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["non_finite"] == 1 and report["far"] == 1
    saved = np.load(tmp_path / "s.npz")
    assert saved["x"].shape == (32, 2) and int(saved["non_finite"]) == 1 and int(saved["far"]) == 1
    assert saved["ok"].tolist() == [False, False] + [True] * 30
    # the default denoising last step projects x̂₀ onto the data's box, but the count is
    # taken before the projection: the exploded row is still reported as far
    assert not np.isfinite(saved["x"][0]).all() and np.abs(saved["x"][1]).max() < 10
    assert report["final"] == "denoise" and report["projected"] >= 1
    assert (tmp_path / "s.png").exists()  # drawn from the sane samples
    res = _sample(run_dir, tmp_path / "i.npz", "--final", "integrate", "--no-x0-guard")
    assert res.exit_code == 0 and "1 of 32 lie far" in res.stderr, res.output
    assert np.abs(np.load(tmp_path / "i.npz")["x"][1]).max() > 1e3

    monkeypatch.setattr(plots, "save_samples", lambda *args, **kwargs: None)  # drawn above
    res = _sample(run_dir, tmp_path / "d.npz", "--drop-bad", "--no-x0-guard")
    assert res.exit_code == 0, res.output
    assert "left out of" in res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["written"] == 30 and report["non_finite"] == 1
    saved = np.load(tmp_path / "d.npz")
    assert saved["x"].shape == (30, 2) and np.isfinite(saved["x"]).all() and "ok" not in saved
    # the default x̂₀ guard projects the exploded row at every call and counts it as guarded
    res = _sample(run_dir, tmp_path / "g.npz")
    assert res.exit_code == 0 and "1 of 32 samples are not finite" in res.stderr, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["far"] == 0 and report["non_finite"] == 1
    assert report["guarded"] >= 2 and report["guarded_far"] >= 2


def test_a_sane_sample_says_nothing(run_dir, tmp_path, monkeypatch):
    from phasediff.training import plots

    monkeypatch.setattr(plots, "save_samples", lambda *args, **kwargs: None)
    res = _sample(run_dir, tmp_path / "s.npz")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["non_finite"] == 0 and report["far"] == 0
    assert np.load(tmp_path / "s.npz")["ok"].all()


def test_trained_run_sample_counts_and_warns(run_dir):
    import phasediff

    run = phasediff.load(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = run.sample(16, "em", 60)  # above em's stability limit: no warning at all
    assert (clean.sanity.non_finite, clean.sanity.far) == (0, 0)
    run.model = _poisoned(run.model)
    with pytest.warns(SampleWarning, match=r"1 of 16 samples are not finite.*1 of 16 lie far"):
        bad = run.sample(16, "em", 30, x0_guard=False)
    assert bad.sanity.as_dict()["non_finite"] == 1 and bad.sanity.far == 1
    assert bad.sanity.ok.tolist() == [False, False] + [True] * 14
    assert math.isnan(float(bad.x[0, 0])) and bad.x.shape == (16, 2)  # kept, not dropped
    assert bad.projected >= 1 and float(bad.unprojected[1].abs().max()) > 1e3  # counted raw
    # with the x̂₀ guard (the default) the exploded output is projected at every call: that
    # sample is counted as guarded instead; the NaN one stays NaN and is still counted
    with pytest.warns(SampleWarning, match=r"1 of 16 samples are not finite"):
        guarded = run.sample(16, "em", 30)
    assert guarded.sanity.non_finite == 1 and guarded.sanity.far == 0
    assert guarded.guarded >= 2 and guarded.guarded_far >= 2  # both poisoned rows (NaN too)
