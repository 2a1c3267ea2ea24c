"""Trainer, configs, checkpoints and `phasediff train`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phasediff.cli import app
from phasediff.training import Trainer, load_checkpoint, load_config, load_trained
from phasediff.training.config import config_from_dict
from phasediff.training.trainer import NonFiniteLossError

CONFIGS = sorted(Path("configs").glob("*.toml"))


def small(name: str = "toy_hold", *extra: str):
    base = [
        "train.steps=40",
        "train.batch_size=128",
        "train.log_every=10",
        "train.ckpt_every=20",
        "train.tensorboard=false",
        "data.n_train=5000",
    ]
    return load_config(f"configs/{name}.toml", [*base, *extra])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert {
        "toy_vp",
        "toy_cld",
        "toy_psld",
        "toy_hold",
        "digits_vp",
        "digits_cld",
        "digits_hold",
    } <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["train.lr=-1"],
            "config field 'train.lr' is invalid: Input should be greater than 0 (got -1).",
        ),
        (["train.stepz=10"], "config field 'train.stepz' is not a known setting."),
        (["process.preset='hold3'"], "valid presets are: cld, critical, hamiltonian, hold"),
        (["objective.weighting='elbo'"], "valid weightings are: eps, score, likelihood, cld"),
        (
            ["model.kind='resnet'"],
            "config field 'model.kind' is invalid: Input should be 'mlp' or 'unet'",
        ),
        (["train.ema_decay=1.0"], "config field 'train.ema_decay' is invalid"),
        (["train.steps"], "--set expects key=value"),
        (["train.steps.x=3"], "'steps' is a value, not a section"),
    ],
)
def test_bad_config_values_name_the_field(overrides, message):
    with pytest.raises(ValueError) as info:
        load_config("configs/toy_hold.toml", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(bad)


def test_toy_run_lowers_the_loss(tmp_path):
    """Two seeds: the mean loss of the last 50 steps is well below that of the first 50.
    Plain ε network and uniform t: the shipped preconditioned recipe's unit loss is mostly
    irreducible at large t and sits near 1 for its first ~2500 steps (docs/objectives.md)."""
    plain = [
        "model.precondition=false",
        "objective.weighting=eps",
        "objective.time_density=uniform",
    ]
    for seed in (0, 1):
        cfg = small("toy_hold", "train.steps=300", f"seed={seed}", *plain)
        trainer = Trainer(cfg, tmp_path / f"s{seed}", progress=False)
        trainer.fit()
        first, last = trainer.losses[:50], trainer.losses[-50:]
        # the HSM ε-loss starts near 1 (unit-variance target) and drops fast on this toy
        assert sum(last) / 50 < 0.6 * sum(first) / 50


def test_resume_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    cfg = small("toy_hold")
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(cfg, tmp_path / "part", progress=False)
    part.fit(steps=20)
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 20
    resumed.fit()
    assert part.losses + resumed.losses == full.losses  # bit-for-bit
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.ema, resumed.ema, strict=True):
        assert torch.equal(a, b)
    rows = list(csv.DictReader(open(tmp_path / "part" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]


def test_run_leaves_a_loadable_checkpoint_and_logs(tmp_path):
    cfg = small("toy_cld", "train.tensorboard=true")
    Trainer(cfg, tmp_path, progress=False).fit()
    model, process, loaded_cfg, data = load_trained(tmp_path)
    assert loaded_cfg == cfg and process.name == "cld"
    out = model(torch.zeros(3, 2, 2), torch.full((3,), 0.5))
    assert out.shape == (3, 1, 2)
    assert (tmp_path / "metrics.csv").exists() and any((tmp_path / "tb").iterdir())
    assert not (tmp_path / "samples").exists()  # sample_every = 0: a sample-free log
    meta, tensors = load_checkpoint(tmp_path)
    assert meta["step"] == 40 and any(k.startswith("optim.") for k in tensors)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000020.json",
        "step_00000020.safetensors",
        "step_00000040.json",
        "step_00000040.safetensors",
    ]


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    cfg = small("toy_vp", "train.steps=20")
    Trainer(cfg, tmp_path / "a", progress=False).fit()
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        Trainer(cfg, tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        Trainer(cfg, tmp_path / "b", resume=True, progress=False)
    other = small("toy_vp", "model.hidden=64")
    with pytest.raises(ValueError, match="different model section"):
        Trainer(other, tmp_path / "a", resume=True, progress=False)


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    cfg = small("toy_psld")
    Trainer(cfg, tmp_path, progress=False).fit()
    newest = tmp_path / "checkpoints" / "step_00000040.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="step_00000040.json.*checksum mismatch"):
        meta, _ = load_checkpoint(tmp_path)
    assert meta["step"] == 20
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "checkpoints" / "step_00000040.json")
    with pytest.raises(ValueError, match="pickle"):
        load_checkpoint(tmp_path / "model.pt")


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoints(tmp_path, monkeypatch):
    cfg = small("toy_vp")
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.fit(steps=20)
    real = trainer.objective

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss * math.nan if trainer.step + 1 == 23 else loss

    trainer.objective = poisoned
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 23"):
        trainer.fit()
    meta, _ = load_checkpoint(tmp_path)
    assert meta["step"] == 20


@pytest.mark.parametrize("name", ["digits_hold", "toy_psld"])
def test_other_models_and_objectives_train(tmp_path, name):
    extra = ["train.steps=3", "train.batch_size=16", "objective.name='dsm'"]
    if name.startswith("digits"):
        extra.append("model.base=8")
    trainer = Trainer(small(name, *extra), tmp_path, progress=False)
    trainer.fit()
    assert len(trainer.losses) == 3 and all(math.isfinite(v) for v in trainer.losses)


def test_config_roundtrip_through_checkpoint_json(tmp_path):
    cfg = small("toy_hold", "process.params.beta=8.0")
    assert config_from_dict(json.loads(json.dumps(cfg.model_dump()))) == cfg
    assert Trainer(cfg, tmp_path, progress=False).process.beta(0.1).item() == 8.0


def test_cli_train_and_its_errors(tmp_path):
    runner = CliRunner()
    args = ["train", "configs/toy_vp.toml", "--out", str(tmp_path / "r"), "--no-progress"]
    res = runner.invoke(app, [*args, "--set", "train.steps=5", "--set", "train.tensorboard=false"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["step"] == 5
    res = runner.invoke(app, [*args, "--set", "train.lr=0"])
    assert res.exit_code == 2 and "config field 'train.lr' is invalid" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["train", "configs/nope.toml", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_ema_warmup_follows_its_formula_and_resumes_exactly(tmp_path):
    cfg = small("toy_cld", "train.ema_warmup=true", "train.ema_decay=0.999")
    run = Trainer(cfg, tmp_path / "w", progress=False)
    # min(d, (1 + n)/(10 + n)): 2/11 at the first step, 0.9 at n = 80, d from n = 8 991 on
    assert run.ema_decay_at(1) == pytest.approx(2 / 11)
    assert run.ema_decay_at(80) == pytest.approx(0.9)
    assert run.ema_decay_at(9000) == 0.999
    plain_cfg = small("toy_cld", "train.ema_warmup=false")  # the shipped configs turn it on
    assert Trainer(plain_cfg, tmp_path / "plain", progress=False).ema_decay_at(1) == 0.999
    # resume continues the rule exactly (it is a function of the step only)
    part = Trainer(cfg, tmp_path / "part", progress=False)
    part.fit(steps=20)
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    resumed.fit()
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.fit()
    for a, b in zip(full.ema, resumed.ema, strict=True):
        assert torch.equal(a, b)
    # without warm-up, 40 steps at 0.999 keep 0.999⁴⁰ = 96 % of the initial weights; with it the
    # EMA has moved most of the way to the trained weights
    init = Trainer(cfg, tmp_path / "init", progress=False)
    start = [p.detach().clone() for p in init.model.parameters()]
    plain = Trainer(plain_cfg, tmp_path / "plain2", progress=False)
    plain.fit()
    trained = [p.detach() for p in full.model.parameters()]

    def share(ema_weights):  # how far the EMA moved from the start towards the weights
        num = sum(float((e - s).pow(2).sum()) for e, s in zip(ema_weights, start, strict=True))
        den = sum(float((w - s).pow(2).sum()) for w, s in zip(trained, start, strict=True))
        return math.sqrt(num / den)

    assert share(plain.ema) < 0.1 < 0.5 < share(full.ema)


def test_cosine_decay_follows_the_clock_under_a_time_limit(tmp_path):
    from phasediff.training.run import learning_rate

    tc = small("toy_cld", "train.steps=1000", "train.warmup=0", "train.lr_decay=cosine").train
    timed = small(
        "toy_cld", "train.steps=1000", "train.warmup=0", "train.lr_decay=cosine",
        "train.time_limit=2",
    ).train  # fmt: skip
    # no time limit: the step alone (half the steps: half the rate, lr_min_ratio = 0)
    assert learning_rate(tc, 500, seconds=1e9) == pytest.approx(tc.lr / 2)
    # 60 of 120 s spent at step 10: the clock is ahead, so the decay is half done
    assert learning_rate(timed, 10, seconds=60.0) == pytest.approx(timed.lr / 2)
    assert learning_rate(timed, 500, seconds=1.0) == pytest.approx(timed.lr / 2)  # steps ahead
    assert learning_rate(timed, 10, seconds=500.0) == pytest.approx(0.0, abs=1e-12)
    # the training clock is carried by the checkpoints, so a resumed run continues the decay
    cfg = small("toy_cld", "train.lr_decay=cosine", "train.time_limit=5", "train.warmup=0")
    Trainer(cfg, tmp_path / "c", progress=False).fit()
    meta, _ = load_checkpoint(tmp_path / "c" / "checkpoints")
    assert meta["train_seconds"] > 0
    again = Trainer(cfg, tmp_path / "c", resume=True, progress=False)
    assert again.train_seconds() == pytest.approx(meta["train_seconds"])
    step = 1  # 1 of 40 steps done
    assert again.lr_at(step) > 0.9 * again.config.train.lr  # a fraction of a second spent
    again.seconds_before = 600.0  # the trainer's rate reads its clock: 10 of 5 minutes spent
    assert again.lr_at(step) == pytest.approx(0.0, abs=1e-12)


def test_time_limit_stops_with_a_checkpoint_and_resumes(tmp_path, capsys):
    cfg = small("toy_cld", "train.steps=100000", "train.time_limit=0.002")  # 0.12 s
    run = Trainer(cfg, tmp_path / "t", progress=False)
    summary = run.fit()
    assert summary["stopped_by_time_limit"] is True
    assert 0 < summary["step"] < 100000
    meta, _ = load_checkpoint(tmp_path / "t" / "checkpoints")
    assert meta["step"] == summary["step"]  # the stop is saved, nothing is lost
    rows = list(csv.DictReader(open(tmp_path / "t" / "metrics.csv")))
    assert int(rows[-1]["step"]) == summary["step"]  # and logged up to it
    again = Trainer(cfg, tmp_path / "t", resume=True, progress=False)
    assert again.step == summary["step"]
    # the limit counts the run's clock across resumes: the time is spent, so no step is
    # trained and no checkpoint is rewritten; a larger limit trains on
    newest = tmp_path / "t" / "checkpoints" / f"step_{summary['step']:08d}.json"
    mtime = newest.stat().st_mtime_ns
    spent = again.fit()
    assert spent["stopped_by_time_limit"] is True and spent["step"] == summary["step"]
    assert newest.stat().st_mtime_ns == mtime
    assert "raise train.time_limit (--set) to train on" in capsys.readouterr().err
    more = small("toy_cld", f"train.steps={summary['step'] + 5}", "train.time_limit=1")
    longer = Trainer(more, tmp_path / "t", resume=True, progress=False).fit()
    assert longer["stopped_by_time_limit"] is False and longer["step"] == summary["step"] + 5
    unlimited = Trainer(small("toy_cld"), tmp_path / "u", progress=False).fit()
    assert unlimited["stopped_by_time_limit"] is False and unlimited["step"] == 40
    with pytest.raises(ValueError, match="train.time_limit"):
        load_config("configs/toy_cld.toml", ["train.time_limit=-1"])
