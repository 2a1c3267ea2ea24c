"""Multi-process training (torchrun, gloo on the CPU) against a single-process run, and the
CUDA-path options (bf16 autocast, fp16, channels-last, torch.compile) on the CPU.

The 2-process runs go through the real entry point,
``python -m torch.distributed.run --standalone --nproc_per_node 2 -m phasediff.cli train``.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from phasediff.training import load_config
from phasediff.training.checkpoint import load_checkpoint, split_prefix
from phasediff.training.trainer import Trainer

ROOT = Path(__file__).parents[1]

# HOLD (k = 3) on the 8×8 digits with a narrow U-Net; warm-up 0 so that every step moves the
# weights by ≈ lr, a checkpoint and a metrics row at every step.
TINY = """
seed = 3
[process]
preset = "hold"
[data]
name = "digits"
hflip = true
[model]
kind = "unet"
base = 8
mults = [1, 2]
num_res_blocks = 1
time_dim = 16
[objective]
name = "hsm"
weighting = "eps"
[train]
steps = 4
batch_size = 10
lr = 1e-3
warmup = 0
grad_clip = 0.05
log_every = 1
ckpt_every = 2
keep_last = 5
threads = 1
tensorboard = false
"""


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _torchrun(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "phasediff.cli",
        "train",
        str(config),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_gloo_processes_match_one_process_and_resume(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    # the 2-process run, interrupted after step 2 and resumed to step 4
    first = _torchrun(config, tmp_path / "ddp", "--set", "train.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count('"step": 2') == 1  # only rank 0 prints its summary
    second = _torchrun(config, tmp_path / "ddp", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]

    torch.set_num_threads(1)
    single = Trainer(load_config(config), tmp_path / "single", progress=False)
    single.fit()

    meta, tensors = load_checkpoint(tmp_path / "ddp")
    assert meta["step"] == 4
    # Float tolerance. The two runs see the same batches, times and noise; only the order of
    # float32 additions differs (two shard sums + an all-reduce vs one batch sum), a relative
    # gradient error of ~1e-7. AdamW divides by √v, so weights whose gradient is near Adam's ε
    # feel that error most; measured here: at most 2e-7 after 4 steps. atol = 1e-5 leaves a
    # 50× margin, while a wrong shard (a rank re-using another's rows, or the whole batch)
    # changes the update direction and moves weights by O(lr) = 1e-3, 100× the tolerance.
    worst = 0.0
    for prefix in ("model", "ema"):
        got = split_prefix(tensors, prefix)
        want = (
            single.model.state_dict()
            if prefix == "model"
            else dict(
                zip(
                    [n for n, p in single.model.named_parameters() if p.requires_grad],
                    single.ema,
                    strict=True,
                )
            )
        )
        assert set(got) == set(want)
        for name, value in want.items():
            torch.testing.assert_close(got[name], value, atol=1e-5, rtol=0, msg=name)
            worst = max(worst, float((got[name] - value).abs().max()))
    print(f"largest weight difference 2 processes vs 1: {worst:.2e}")
    _, at_step2 = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_00000002.json")
    step2 = split_prefix(at_step2, "model")
    step4 = split_prefix(tensors, "model")
    moved = max(float((step4[n] - step2[n]).abs().max()) for n in step4)
    assert moved > 1e-4  # the comparison is not vacuous: steps 3–4 moved weights by ~lr
    # Logged loss and gradient norm per step: the loss is the all-reduced global mean, the
    # norm is that of the averaged gradient. Both agree to float32 rounding (rtol 1e-4); a
    # missing W/B scaling of the shard loss would double the norm.
    ddp_rows, single_rows = _rows(tmp_path / "ddp"), _rows(tmp_path / "single")
    assert [r["step"] for r in ddp_rows] == ["1", "2", "3", "4"]  # one writer, no duplicates
    for a, b in zip(ddp_rows, single_rows, strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
        assert float(a["grad_norm"]) == pytest.approx(float(b["grad_norm"]), rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("*.json")) == [
        "step_00000002.json",
        "step_00000004.json",
    ]


# ---------------------------------------------------------------------------- CUDA path on CPU


def _tiny_trainer(tmp_path: Path, name: str, *overrides: str) -> Trainer:
    path = _config_file(tmp_path)
    cfg = load_config(path, ["train.steps=3", "data.hflip=false", *overrides])
    return Trainer(cfg, tmp_path / name, progress=False)


def test_bf16_autocast_runs_on_cpu_and_tracks_float32(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ref = _tiny_trainer(tmp_path, "fp32")
    ref.fit()
    bf16 = _tiny_trainer(tmp_path, "bf16", "train.amp='bf16'")
    seen: list[torch.dtype] = []
    bf16.model.inp.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    bf16.fit()
    assert seen and all(d == torch.bfloat16 for d in seen)  # the network really ran in bf16
    # bf16 keeps 8 mantissa bits (relative rounding 2⁻⁹ ≈ 2e-3 per operation); the losses of
    # the first steps stay within 2 % of float32, and are float32 numbers (the residual is
    # computed outside autocast).
    for a, b in zip(bf16.losses, ref.losses, strict=True):
        assert a == pytest.approx(b, rel=2e-2)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


def test_fp16_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train.amp = 'fp16' needs a CUDA device") as e:
        _tiny_trainer(tmp_path, "fp16", "train.amp='fp16'")
    assert str(e.value).endswith(".") and "\n" not in str(e.value)


def test_channels_last_on_cpu_gives_the_same_losses(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ref = _tiny_trainer(tmp_path, "plain")
    ref.fit()
    cl = _tiny_trainer(tmp_path, "cl", "train.channels_last=true")
    assert cl.model.inp.weight.is_contiguous(memory_format=torch.channels_last)
    cl.fit()
    # same arithmetic in another memory layout: only the summation order of the convolutions
    # may change, relative ~1e-6 in float32
    for a, b in zip(cl.losses, ref.losses, strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_compile_is_opt_in_and_keeps_checkpoint_names(tmp_path: Path, monkeypatch) -> None:
    # the "eager" backend exercises the torch.compile wrapper without a C++ toolchain
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    trainer = _tiny_trainer(tmp_path, "compiled", "train.compile=true", "train.steps=2")
    assert type(trainer.execution.network).__name__ == "OptimizedModule"
    trainer.fit()
    _, tensors = load_checkpoint(tmp_path / "compiled")
    assert not any("_orig_mod" in k or ".module." in k for k in tensors)
    assert all(math.isfinite(v) for v in trainer.losses)


def test_sample_compile_flag_gives_the_same_samples(tmp_path: Path, monkeypatch) -> None:
    """`phasediff sample --compile` wraps the loaded network in torch.compile ("eager" backend
    here: no C++ toolchain needed); the samplers still see its parameterization and the
    samples are the same to float32 rounding."""
    import numpy as np
    from typer.testing import CliRunner

    from phasediff.cli import app

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    trainer = _tiny_trainer(tmp_path, "run", "train.steps=2", "train.ckpt_every=2")
    trainer.fit()
    outs = {}
    for flag in ([], ["--compile"]):
        path = tmp_path / f"s{len(flag)}.npz"
        args = ["sample", str(tmp_path / "run"), "--sampler", "ei", "--steps", "4"]
        result = CliRunner().invoke(app, [*args, "--num", "16", "--out", str(path), *flag])
        assert result.exit_code == 0, result.output
        outs[len(flag)] = np.load(path)["x"]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)
