"""The two-line API (phasediff/api.py): train/load, TrainedRun.sample/.evaluate, and the README
example executed as written (on a shortened config)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import phasediff
from phasediff.cli import app
from phasediff.data.sanity import run_data_range
from phasediff.samplers import SAMPLERS
from phasediff.training import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "train.steps=20",
    "train.ckpt_every=20",
    "train.log_every=10",
    "train.batch_size=64",
    "train.tensorboard=false",
    "train.threads=1",
    "data.n_train=2000",
    "model.hidden=32",
]


@pytest.fixture(scope="module")
def cld_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "cld"
    phasediff.train(ROOT / "configs/toy_cld.toml", out, overrides=TINY, progress=False)
    return out


def test_root_exports_the_verbs():
    from phasediff import api

    assert phasediff.load is api.load and phasediff.train is api.train
    assert phasediff.TrainedRun is api.TrainedRun
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        phasediff.nope  # noqa: B018


def test_load_exposes_model_process_config_and_data(cld_run):
    run = phasediff.load(cld_run)
    assert run.process.name == "cld" and run.process.k == 2
    assert run.config.train.steps == 20 and run.data.data_shape == (2,)
    assert not run.model.training  # eval mode
    raw = phasediff.load(cld_run, ema=False)
    ema_w = next(run.model.parameters())
    raw_w = next(raw.model.parameters())
    assert not torch.equal(ema_w, raw_w)  # EMA by default, raw weights on request


def test_sample_defaults_to_the_recommended_sampler_and_matches_the_cli(cld_run, tmp_path):
    run = phasediff.load(cld_run)
    s = run.sample(64, steps=5, seed=3)
    # the recommended sampler of a score model is ei1c on its default (auto) grid, ending
    # with the denoiser jump projected onto the run's recorded data range, and the x̂₀ guard
    # on that range at every call
    box = run_data_range(cld_run, run.data.data)[0]
    direct = SAMPLERS["ei1c"](
        run.model,
        run.process,
        (64, 2),
        5,
        grid="auto",
        generator=torch.Generator().manual_seed(3),
        final="denoise",
        x0_range=(box.low, box.high),
        x0_guard=True,
    )
    torch.testing.assert_close(s.x, direct.x, rtol=0, atol=0)
    assert s.guarded == direct.guarded and isinstance(s.guarded, int)
    own = run.sample(64, steps=5, seed=3, final="integrate")  # the sampler's own last step
    plain = SAMPLERS["ei1c"](
        run.model, run.process, (64, 2), 5, generator=torch.Generator().manual_seed(3),
        x0_range=(box.low, box.high), x0_guard=True,
    )  # fmt: skip
    torch.testing.assert_close(own.x, plain.x, rtol=0, atol=0)
    bare = run.sample(64, steps=5, seed=3, final="integrate", x0_guard=False)  # no guard
    unguarded = SAMPLERS["ei1c"](
        run.model, run.process, (64, 2), 5, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(bare.x, unguarded.x, rtol=0, atol=0)
    assert bare.guarded is None
    assert not torch.equal(own.x, s.x)
    assert s.nfe == 5 and run.sample(64, seed=3).nfe == 50  # default steps: 50
    out = tmp_path / "s.npz"
    result = CliRunner().invoke(
        app,
        ["sample", str(cld_run), "--steps", "5", "--num", "64", "--seed", "3", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out)["x"], s.x.numpy())


def test_sample_takes_any_registry_sampler_and_its_options(cld_run):
    run = phasediff.load(cld_run)
    seen = []
    s = run.sample(16, "em", 4, grid="uniform", seed=1, callback=lambda info: seen.append(1))
    assert s.x.shape == (16, 2) and s.nfe == 4 and seen
    assert run.sample(16, "ei", 3).nfe == 3  # ei at its own (optimal) grid
    # a registry name keeps its entry's options (ei1c: order 1 with the corrector)
    for name in ("ei1c", "eic", "ei3"):
        got = run.sample(16, name, 4, seed=2, final="integrate", x0_guard=False)
        want = SAMPLERS[name](
            run.model, run.process, (16, 2), 4, generator=torch.Generator().manual_seed(2)
        )
        torch.testing.assert_close(got.x, want.x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        run.sample(16, "nope")
    with pytest.raises(ValueError, match="n must be an integer ≥ 1"):
        run.sample(0)
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1"):
        run.sample(4, steps=0)


def test_evaluate_accepts_samples_tensors_files_or_draws(cld_run, tmp_path):
    run = phasediff.load(cld_run)
    s = run.sample(300, steps=5)
    a = run.evaluate(s, out=tmp_path / "a")
    assert a["samples"]["num"] == 300
    assert (tmp_path / "a" / "metrics.json").is_file()
    drawn = run.evaluate(num=300, steps=5, out=tmp_path / "c")
    assert drawn["samples"]["sampler"] == "ei1c" and drawn["samples"]["grid"] == "auto"
    assert drawn["metrics"] == a["metrics"]  # same seed, same sampler: the same samples
    ei = run.evaluate(s.x[:100], out=tmp_path / "d")  # a tensor of samples
    assert ei["samples"]["num"] == 100
    with pytest.raises(ValueError, match="samples must be finite"):
        run.evaluate(torch.full((10, 2), float("nan")), out=tmp_path / "e")


def test_train_takes_a_path_a_config_or_a_dict(tmp_path):
    cfg = load_config(ROOT / "configs/toy_vp.toml", TINY)
    run = phasediff.train(cfg, tmp_path / "a", progress=False)
    assert run.config.train.steps == 20 and run.process.name == "vp"
    raw = cfg.model_dump()
    run = phasediff.train(raw, tmp_path / "b", overrides=["train.steps=10"], progress=False)
    assert run.config.train.steps == 10
    assert raw["train"]["steps"] == 20  # the caller's dict is not modified
    with pytest.raises(ValueError, match="config must be a TOML path, a Config or a dict"):
        phasediff.train(3, tmp_path / "c")
    with pytest.raises(ValueError, match="does not exist"):
        phasediff.load(tmp_path / "missing")


def test_velocity_runs_default_to_hgf_heun(tmp_path):
    run = phasediff.train(ROOT / "configs/toy_ohgf.toml", tmp_path / "v", overrides=TINY)
    s = run.sample(32, seed=0)
    direct = SAMPLERS["hgf_heun"](
        run.model, run.process, (32, 2), 20, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(s.x, direct.x, rtol=0, atol=0)
    # the CLI without --sampler/--steps makes the same choice
    out = tmp_path / "s.npz"
    result = CliRunner().invoke(
        app, ["sample", str(tmp_path / "v"), "--num", "32", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["sampler"] == "hgf_heun" and line["steps"] == 20
    np.testing.assert_array_equal(np.load(out)["x"], s.x.numpy())


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, executed in a directory whose configs/toy_cld.toml is the
    shipped one with a 20-step budget (the example itself is not edited)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(import phasediff\n.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 3, block
    config = (ROOT / "configs/toy_cld.toml").read_text(encoding="utf-8")
    config = re.sub(r"(?m)^steps = \d+", "steps = 20", config)
    config = re.sub(r"(?m)^n_train = \d+", "n_train = 2000", config)
    config = re.sub(r"(?m)^ckpt_every = \d+", "ckpt_every = 20", config)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/toy_cld.toml").write_text(config, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    report = scope["report"]
    assert report["samples"]["num"] == 2000 and "metrics" in report
    assert (tmp_path / "runs/cld/eval/metrics.json").is_file()


def test_cli_sample_and_eval_take_the_final_step(cld_run, tmp_path):
    runner = CliRunner()
    base = ["sample", str(cld_run), "--steps", "5", "--num", "64", "--no-progress"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "d.npz")])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["final"] == "denoise" and isinstance(line["projected"], int)
    res = runner.invoke(app, [*base, "--final", "integrate", "--out", str(tmp_path / "i.npz")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["final"] == "integrate"
    assert not np.array_equal(np.load(tmp_path / "d.npz")["x"], np.load(tmp_path / "i.npz")["x"])
    res = runner.invoke(app, [*base, "--final", "x0", "--out", str(tmp_path / "b.npz")])
    assert res.exit_code == 2 and "final must be one of integrate, denoise, got 'x0'" in res.output
    res = runner.invoke(
        app, ["eval", str(cld_run), "--steps", "5", "--num", "300", "--no-progress",
              "--final", "integrate", "--out", str(tmp_path / "ev")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["samples"]["final"] == "integrate"
    assert isinstance(report["samples"]["guarded"], int)  # the x̂₀ guard: on by default
    # far samples are counted as phasediff sample counts them: the same draw, the same count
    # (21 of 300 measured: 5 steps of a 20-step model, integrating to t_min)
    res = runner.invoke(
        app, ["sample", str(cld_run), "--steps", "5", "--num", "300", "--no-progress",
              "--final", "integrate", "--out", str(tmp_path / "same.npz")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    same = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["samples"]["sampler"] == same["sampler"] == "ei1c"  # the recommended one
    assert report["samples"]["far"] == same["far"] > 0
    res = runner.invoke(
        app, ["eval", str(cld_run), "--steps", "5", "--num", "50", "--no-progress",
              "--no-x0-guard", "--out", str(tmp_path / "ng")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ng" / "metrics.json").read_text())["samples"]["guarded"] is None
    # dopri5 keeps integrating by default: its steps only set the output grid
    run = phasediff.load(cld_run)
    gen = torch.Generator().manual_seed(0)  # sample()'s default seed
    box = run_data_range(cld_run, run.data.data)[0]
    want = SAMPLERS["dopri5"](
        run.model, run.process, (8, 2), 4, generator=gen, x0_range=(box.low, box.high),
        x0_guard=True,
    )  # fmt: skip
    torch.testing.assert_close(run.sample(8, "dopri5", 4).x, want.x, rtol=0, atol=0)


def test_shipped_configs_are_found_from_any_directory(tmp_path, monkeypatch):
    """An installed phasediff has no checkout: `configs/NAME.toml` then means the config
    shipped inside the package; a file of that name in the working directory wins."""
    monkeypatch.chdir(tmp_path)
    shipped = load_config("configs/toy_hold.toml")
    assert shipped.name == "toy_hold" and shipped.process.preset == "hold"
    assert shipped == load_config(ROOT / "configs/toy_hold.toml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy_hold.toml").write_text('[process]\npreset = "cld"\n')
    assert load_config("configs/toy_hold.toml").process.preset == "cld"  # the user's own
    with pytest.raises(ValueError, match="'configs/nope.toml' does not exist"):
        load_config("configs/nope.toml")
    with pytest.raises(ValueError, match="does not exist"):
        load_config("toy_hold.toml")  # only the configs/ prefix falls back
    assert (ROOT / "configs").resolve() == (ROOT / "phasediff" / "configs")  # one copy only
