"""Reliability (docs/design.md §8, docs/reliability.md): crash-safe checkpoints, the non-finite
guard, safe loading, and a table of bad input at the command line.

Every CLI case runs through `phasediff.cli.main()` (the console script's entry point, with
sys.argv patched) so that its last-resort error handling is what is exercised; a few run the
real `python -m phasediff.cli` in a subprocess. Each must end in one sentence and the
documented exit status (2 bad input, 1 failure at run time), never a Python traceback. The
API-level cases of the processes live in tests/test_validation.py.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import typer.main
from typer.core import TyperArgument, TyperOption

from phasediff.cli import app, main
from phasediff.processes import PRESETS
from phasediff.training import Trainer, load_checkpoint, load_config, load_trained
from phasediff.training import checkpoint as ckpt
from phasediff.training.checkpoint import CheckpointWriteError, list_checkpoints, save_checkpoint
from phasediff.training.trainer import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "toy_hold.toml")
TINY = [
    "train.batch_size=16",
    "train.log_every=1",
    "train.ckpt_every=2",
    "train.steps=4",
    "train.tensorboard=false",
    "train.threads=1",
    "data.n_train=256",
    "model.hidden=16",
    "model.depth=1",
    "model.time_dim=8",
]
SETS = [x for o in TINY for x in ("--set", o)]


def tiny(*extra: str):
    return load_config(CONFIG, [*TINY, *extra])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny HOLD run with checkpoints at steps 2 and 4 (never modified)."""
    path = tmp_path_factory.mktemp("run")
    Trainer(tiny(), path, progress=False).fit()
    return path


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stdout + stderr) of `phasediff ARGV` through cli.main()."""
    monkeypatch.setattr(sys, "argv", ["phasediff", *argv])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets it
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def error_line(text: str) -> str:
    """The one `error: ...` line of an output (asserting there is exactly one)."""
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, text
    return lines[0]


# ============================================================== crash-safe checkpoints
def _damage_truncate_tensors(json_path: Path) -> None:
    p = json_path.with_suffix(".safetensors")
    p.write_bytes(p.read_bytes()[:100])


def _damage_truncate_json(json_path: Path) -> None:
    json_path.write_bytes(json_path.read_bytes()[:50])


def _damage_flip_json_digit(json_path: Path) -> None:
    """Still valid JSON, still the same keys: only the record's own checksum can tell."""
    meta = json.loads(json_path.read_text())
    meta["config"]["train"]["lr"] *= 2
    json_path.write_text(json.dumps(meta))


def _damage_delete_tensors(json_path: Path) -> None:
    json_path.with_suffix(".safetensors").unlink()


def _damage_empty_json(json_path: Path) -> None:
    json_path.write_bytes(b"")


def _damage_junk_json(json_path: Path) -> None:
    json_path.write_bytes(bytes(range(256)) * 4)


def _damage_flip_tensor_byte(json_path: Path) -> None:
    p = json_path.with_suffix(".safetensors")
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x01
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated tensors": (_damage_truncate_tensors, "checksum mismatch"),
    "truncated JSON": (_damage_truncate_json, "not a readable checkpoint JSON"),
    "edited JSON": (_damage_flip_json_digit, "its checksum does not match"),
    "missing tensors": (_damage_delete_tensors, "are missing"),
    "empty JSON": (_damage_empty_json, "not a readable checkpoint JSON"),
    "binary JSON": (_damage_junk_json, "not a readable checkpoint JSON"),
    "flipped tensor bit": (_damage_flip_tensor_byte, "checksum mismatch"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_corrupt_newest_checkpoint_falls_back_and_the_warning_names_the_file(
    run_dir, tmp_path, damage
):
    run = copy_run(run_dir, tmp_path / "run")
    newest = run / "checkpoints" / "step_00000004.json"
    harm, reason = DAMAGE[damage]
    harm(newest)
    with pytest.warns(UserWarning) as record:
        meta, _ = load_checkpoint(run)
    assert meta["step"] == 2  # the previous good checkpoint
    (message,) = [str(w.message) for w in record]
    assert message.startswith(f"skipping checkpoint {newest}: ") and reason in message
    with pytest.raises(ValueError, match=re.escape(reason)):
        load_checkpoint(newest)  # asked for by name: no silent fallback


def test_resume_after_corruption_rewrites_the_step_and_keep_last_spares_good_ones(
    run_dir, tmp_path
):
    """keep_last = 1 after a fallback: pruning counts only checkpoints up to the current step,
    so the corrupt step 4 never pushes out the good step 2/3 it fell back to."""
    run = copy_run(run_dir, tmp_path / "run")
    _damage_truncate_tensors(run / "checkpoints" / "step_00000004.json")
    cfg = tiny("train.keep_last=1", "train.ckpt_every=1")
    with pytest.warns(UserWarning, match="step_00000004.json"):
        trainer = Trainer(cfg, run, resume=True, progress=False)
    assert trainer.step == 2
    trainer.fit(steps=3)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [f"step_0000000{s}.{e}" for s in (3, 4) for e in ("json", "safetensors")]
    with pytest.warns(UserWarning, match="step_00000004.json"):
        assert load_checkpoint(run)[0]["step"] == 3
    trainer.fit(steps=4)  # re-saves step 4: now valid, and the only one left
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000004.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(run)[0]["step"] == 4


def test_checkpoint_json_carries_checksums_and_the_process(run_dir):
    path = run_dir / "checkpoints" / "step_00000004.json"
    meta = json.loads(path.read_text())
    tensors = path.with_suffix(".safetensors").read_bytes()
    assert meta["sha256"] == hashlib.sha256(tensors).hexdigest()
    assert meta["meta_sha256"] == ckpt._meta_digest(meta)
    assert meta["process"]["name"] == "hold" and len(meta["process"]["A"]) == 3
    assert meta["skipped_nonfinite"] == 0


def test_checkpoints_sort_by_step_number_not_by_name(tmp_path):
    for step in (99_999_999, 100_000_000, 7):
        (tmp_path / f"step_{step:08d}.json").write_text("{}")
    (tmp_path / "step_notanumber.json").write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000007.json",
        "step_99999999.json",
        "step_100000000.json",
    ]


def test_metrics_log_drops_a_cut_row_and_upgrades_an_old_header(tmp_path):
    from phasediff.training.trainer import _truncate_csv

    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,lr,grad_norm,seconds,skipped\n1,0.5,0.1,1,0.1,0\n2,0.4,0.1,1,0")
    _truncate_csv(path, 5)  # the row of step 2 was cut by a kill: it goes, even though 2 ≤ 5
    assert path.read_text().splitlines() == [
        "step,loss,lr,grad_norm,seconds,skipped",
        "1,0.5,0.1,1,0.1,0",
    ]
    # a log begun before the `skipped` column existed keeps its rows, padded with 0
    path.write_text(
        "step,loss,lr,grad_norm,seconds\n1,0.5,0.1,1,0.1\n2,0.4,0.1,1,0.2\n3,0.3,1,1,1\n"
    )
    _truncate_csv(path, 2)
    assert path.read_text().splitlines() == [
        "step,loss,lr,grad_norm,seconds,skipped",
        "1,0.5,0.1,1,0.1,0",
        "2,0.4,0.1,1,0.2,0",
    ]


def _fail_in_save(monkeypatch, op: str, n: int, err: int) -> None:
    """Make the n-th call of os.<op> made while a checkpoint is being saved raise `err`."""
    from phasediff.training import run as run_module  # every trainer saves through it

    state = {"armed": False, "calls": 0}
    real_save, real_op = run_module.save_checkpoint, getattr(os, op)

    def save(*args, **kwargs):
        state["armed"] = True
        try:
            return real_save(*args, **kwargs)
        finally:
            state["armed"] = False

    def call(*args, **kwargs):
        if state["armed"]:
            state["calls"] += 1
            if state["calls"] == n:
                raise OSError(err, os.strerror(err))
        return real_op(*args, **kwargs)

    monkeypatch.setattr(run_module, "save_checkpoint", save)
    monkeypatch.setattr(os, op, call)


@pytest.mark.parametrize(
    "op, n, err",
    [
        ("write", 1, errno.ENOSPC),  # the tensor file
        ("write", 2, errno.ENOSPC),  # the JSON, after the tensors were renamed into place
        ("fsync", 1, errno.EIO),
        ("replace", 2, errno.EROFS),
    ],
)
def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, op, n, err):
    trainer = Trainer(tiny(), tmp_path, progress=False)
    trainer.fit(steps=2)
    ckpt_dir = tmp_path / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpt_dir.iterdir()}
    _fail_in_save(monkeypatch, op, n, err)
    with pytest.raises(CheckpointWriteError) as info:
        trainer.fit()
    monkeypatch.undo()
    message = str(info.value)
    assert message == (
        f"cannot write checkpoint {str(ckpt_dir / 'step_00000004.json')!r} ({os.strerror(err)}); "
        f"the previous checkpoint step_00000002.json is intact; free space or fix the directory "
        f"and continue with --resume."
    )
    # nothing half-written is left behind and the old checkpoint is byte-for-byte the same
    assert {p.name: p.read_bytes() for p in ckpt_dir.iterdir()} == before
    resumed = Trainer(tiny(), tmp_path, resume=True, progress=False)
    assert resumed.step == 2
    assert resumed.fit()["step"] == 4


def test_cli_disk_full_is_one_sentence_and_status_1(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", CONFIG, "--out", str(out), "--no-progress", *SETS]
    assert run_main([*args, "--set", "train.steps=2"], monkeypatch, capsys)[0] == 0

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt, "atomic_write_bytes", disk_full)
    code, text = run_main([*args, "--resume"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in text
    assert error_line(text).endswith(
        "(No space left on device); the previous checkpoint step_00000002.json is intact; "
        "free space or fix the directory and continue with --resume."
    )


def test_cli_resume_warns_about_the_corrupt_file_without_a_traceback(run_dir, tmp_path):
    """The real console path in a subprocess: the warning is one `warning:` line naming the
    skipped file, the run resumes from the previous checkpoint and finishes."""
    run = copy_run(run_dir, tmp_path / "run")
    newest = run / "checkpoints" / "step_00000004.json"
    _damage_truncate_json(newest)
    res = subprocess.run(
        [sys.executable, "-m", "phasediff.cli", "train", CONFIG, "--out", str(run)]
        + ["--resume", "--no-progress", *SETS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    warning_lines = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warning_lines == [
        f"warning: skipping checkpoint {newest}: {str(newest)!r} is not a readable checkpoint "
        f"JSON (JSONDecodeError)."
    ]
    assert json.loads(res.stdout.strip().splitlines()[-1])["step"] == 4


# ============================================================== the non-finite guard
def _poison_gradient(trainer: Trainer, index: int, bad_steps: set[int]) -> str:
    """Make one parameter's gradient NaN at the given steps; returns its name."""
    name, param = list(trainer.model.named_parameters())[index]
    param.register_hook(lambda g: g * math.nan if trainer.step + 1 in bad_steps else g)
    return name


def _poison_loss(trainer: Trainer, bad_steps: set[int]) -> None:
    real = trainer.objective

    def objective(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss * math.inf if trainer.step + 1 in bad_steps else loss

    trainer.objective = objective


def test_non_finite_gradient_stops_naming_the_parameter_and_step(tmp_path):
    trainer = Trainer(tiny("train.steps=6"), tmp_path, progress=False)
    name = _poison_gradient(trainer, 2, {5})
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    kept = tmp_path / "checkpoints" / "step_00000004.json"
    assert str(info.value) == (
        f"non-finite gradient of {name!r} at step 5; training stopped and the last good "
        f"checkpoint {str(kept)!r} is kept."
    )
    assert (info.value.step, info.value.tensor) == (5, f"gradient of {name!r}")
    # nothing was updated by the bad batch: the weights in memory are the checkpoint's
    meta, tensors = load_checkpoint(tmp_path)
    assert meta["step"] == trainer.step == 4
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(tensors[f"model.{key}"], value)


def test_skipped_batches_update_nothing_and_are_counted(tmp_path, capsys):
    cfg = tiny("train.steps=8", "train.skip_nonfinite=2")
    trainer = Trainer(cfg, tmp_path, progress=False)
    _poison_loss(trainer, {3})
    name = _poison_gradient(trainer, 0, {6})
    trainer.fit(steps=2)
    params = [p.detach().clone() for p in trainer.params]
    ema = [e.clone() for e in trainer.ema]
    adam = {k: v.clone() for k, v in trainer.optimizer.state[trainer.params[0]].items()}
    assert all(math.isnan(v) for v in trainer.train_step())  # step 3: skipped
    assert (trainer.step, trainer.skipped) == (3, 1)
    for a, b in zip(params + ema, trainer.params + trainer.ema, strict=True):
        assert torch.equal(a, b)
    for key, value in trainer.optimizer.state[trainer.params[0]].items():
        assert torch.equal(adam[key], value)  # AdamW's step count and moments too
    summary = trainer.fit()
    assert summary["step"] == 8 and summary["skipped_nonfinite"] == 2
    assert len(trainer.losses) == 6  # 8 steps, 2 skipped
    err = capsys.readouterr().err
    assert "warning: skipped the batch of step 3 (non-finite loss); 1 of 2" in err
    assert f"step 6 (non-finite gradient of {name!r}); 2 of 2" in err
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()]
    assert rows[0] == ["step", "loss", "lr", "grad_norm", "seconds", "skipped"]
    # step 3 ran outside fit() above, so it has no row; step 6 logs a NaN loss (all skipped)
    assert [(r[0], r[-1]) for r in rows[1:]] == [
        ("1", "0"),
        ("2", "0"),
        ("4", "1"),
        ("5", "1"),
        ("6", "2"),
        ("7", "2"),
        ("8", "2"),
    ]
    assert [r[0] for r in rows[1:] if r[1] == "nan"] == ["6"]
    # the count survives a resume: one more bad batch now exceeds the budget
    resumed = Trainer(cfg.model_copy(deep=True), tmp_path, resume=True, progress=False)
    assert resumed.skipped == 2
    _poison_loss(resumed, {9})
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 9 after skipping 2"):
        resumed.fit(steps=10)


def test_cli_non_finite_stops_with_status_1_and_skip_nonfinite(tmp_path, monkeypatch, capsys):
    """lr = 1e30 makes the weights overflow after one update, so every later loss is Inf."""
    base = ["train", CONFIG, "--no-progress", *SETS]
    blowup = ["--set", "train.lr=1e30", "--set", "train.warmup=0", "--set", "train.steps=8"]
    code, text = run_main([*base, "--out", str(tmp_path / "a"), *blowup], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in text
    assert re.fullmatch(
        r"error: non-finite (loss|gradient of '[\w.]+') at step 2; training stopped and "
        r"no checkpoint had been written yet\.",
        error_line(text),
    )
    args = [*base, "--out", str(tmp_path / "b"), *blowup, "--skip-nonfinite", "3"]
    code, text = run_main(args, monkeypatch, capsys)
    assert code == 1 and text.count("warning: skipped the batch") == 3
    line = error_line(text)
    assert "at step 5 after skipping 3 bad batches (--skip-nonfinite 3)" in line
    assert line.endswith(f"{str(tmp_path / 'b' / 'checkpoints' / 'step_00000004.json')!r} is kept.")


def test_cli_train_classifier_non_finite_stops_with_status_1(tmp_path, monkeypatch, capsys):
    """As `train`: --lr 1e30 blows the classifier's weights up after one update, and the
    command ends in the trainer's one sentence with status 1, not an 'unexpected' error."""
    out = tmp_path / "clf"
    args = ["train-classifier", str(REPO / "configs" / "digits_hold.toml"), "--out", str(out)]
    args += ["--steps", "3", "--batch-size", "8", "--width", "4", "--threads", "1"]
    code, text = run_main([*args, "--lr", "1e30", "--no-progress"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in text and "unexpected" not in text
    assert re.fullmatch(
        r"error: non-finite (loss|gradient of '[\w.]+') at step 2; training stopped and "
        r"no checkpoint had been written yet\.",
        error_line(text),
    )
    assert not (out / "classifier.json").exists()


# ------------------------------------------- the same guard, Hamiltonian score matching
HAMILTONIAN_SM_TINY = [
    *(o for o in TINY if not o.startswith("model.")),
    "model.hidden=16",
    "model.depth=1",
    "model.time_dim=8",
    "hamiltonian_sm.velocity_steps=2",
    "hamiltonian_sm.leapfrog_steps=3",
]


def tiny_hamiltonian_sm(*extra: str):
    return load_config(REPO / "configs" / "toy_hamiltonian_sm.toml", [*HAMILTONIAN_SM_TINY, *extra])


def _hamiltonian_sm_state(trainer) -> list[torch.Tensor]:
    """Both networks, the EMA and both AdamW states (step counts and moments) as tensors."""
    state = [t.detach().clone() for t in trainer.model_tensors().values()]
    state += [e.clone() for e in trainer.ema]
    for _, _, optimizer in trainer.optimizers():
        for per_param in optimizer.state_dict()["state"].values():
            state += [torch.as_tensor(v).clone() for v in per_param.values()]
    return state


def _poison_force_output(trainer, bad_steps: set[int]) -> None:
    """F_θ returns Inf at the given steps: the φ step's trajectories, hence its loss, blow up."""
    real = trainer.force.forward
    trainer.force.forward = lambda x: real(x) * (math.inf if trainer.step + 1 in bad_steps else 1)


def _poison_discrepancy(monkeypatch, trainer, bad_steps: set[int]) -> None:
    from phasediff.training import hamiltonian_sm

    real = hamiltonian_sm.discrepancy_loss

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss * math.nan if trainer.step + 1 in bad_steps else loss

    monkeypatch.setattr(hamiltonian_sm, "discrepancy_loss", poisoned)


def test_hamiltonian_sm_non_finite_gradient_stops_naming_the_parameter_and_step(tmp_path):
    """As test_non_finite_gradient_stops_naming_the_parameter_and_step, for the
    Hamiltonian-score-matching trainer: the φ steps already taken in the bad step are rolled
    back, so both networks in memory are the checkpoint's."""
    from phasediff.training import HamiltonianSMTrainer

    trainer = HamiltonianSMTrainer(tiny_hamiltonian_sm("train.steps=6"), tmp_path, progress=False)
    name, param = list(trainer.force.named_parameters())[2]
    param.register_hook(lambda g: g * math.nan if trainer.step + 1 == 5 else g)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    kept = tmp_path / "checkpoints" / "step_00000004.json"
    assert str(info.value) == (
        f"non-finite gradient of 'force.{name}' at step 5; training stopped and the last good "
        f"checkpoint {str(kept)!r} is kept."
    )
    assert (info.value.step, info.value.tensor) == (5, f"gradient of 'force.{name}'")
    meta, tensors = load_checkpoint(tmp_path)
    assert meta["step"] == trainer.step == 4
    for key, value in trainer.model_tensors().items():
        assert torch.equal(tensors[key], value), key
    # config.json and metrics.csv went through the run skeleton (atomic, truncated on resume)
    assert json.loads((tmp_path / "config.json").read_text())["hamiltonian_sm"]["horizon"] == 0.5
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,velocity_loss,discrepancy,lr,grad_norm,seconds,skipped"


def test_hamiltonian_sm_skipped_batches_update_nothing_and_are_counted(
    tmp_path, capsys, monkeypatch
):
    """As test_skipped_batches_update_nothing_and_are_counted, for the
    Hamiltonian-score-matching trainer (a bad θ loss at step 3, a bad φ loss at step 6)."""
    from phasediff.training import HamiltonianSMTrainer

    cfg = tiny_hamiltonian_sm("train.steps=8", "train.skip_nonfinite=2")
    trainer = HamiltonianSMTrainer(cfg, tmp_path, progress=False)
    _poison_discrepancy(monkeypatch, trainer, {3})
    _poison_force_output(trainer, {6})
    trainer.fit(steps=2)
    before = _hamiltonian_sm_state(trainer)
    assert all(math.isnan(v) for v in trainer.train_step())  # step 3: skipped
    assert (trainer.step, trainer.skipped) == (3, 1)
    after = _hamiltonian_sm_state(trainer)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)  # weights, EMA, both AdamW states: untouched
    summary = trainer.fit()
    assert summary["step"] == 8 and summary["skipped_nonfinite"] == 2
    assert len(trainer.history) == 6  # 8 steps, 2 skipped
    err = capsys.readouterr().err
    assert "warning: skipped the batch of step 3 (non-finite discrepancy loss); 1 of 2" in err
    assert "step 6 (non-finite velocity-predictor loss); 2 of 2" in err
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()]
    assert [(r[0], r[-1]) for r in rows[1:]] == [
        ("1", "0"),
        ("2", "0"),
        ("4", "1"),
        ("5", "1"),
        ("6", "2"),
        ("7", "2"),
        ("8", "2"),
    ]
    assert [r[0] for r in rows[1:] if r[1] == "nan"] == ["6"]
    resumed = HamiltonianSMTrainer(cfg.model_copy(deep=True), tmp_path, resume=True, progress=False)
    assert resumed.skipped == 2
    _poison_discrepancy(monkeypatch, resumed, {9})
    with pytest.raises(NonFiniteLossError, match=r"^non-finite discrepancy loss at step 9 after"):
        resumed.fit(steps=10)


# ============================================================== safe loading
def _state(run_dir: Path) -> tuple[dict, dict]:
    meta, tensors = load_checkpoint(run_dir)
    return meta, tensors


def test_pickle_is_refused_unless_allowed_then_read_weights_only(run_dir, tmp_path):
    meta, tensors = _state(run_dir)
    path = tmp_path / "model.pt"
    torch.save(
        {
            "config": meta["config"],
            "model": ckpt.split_prefix(tensors, "model"),
            "ema": ckpt.split_prefix(tensors, "ema"),
            "step": 4,
            "process": meta["process"],
        },
        path,
    )
    with pytest.raises(ValueError, match=r"looks like a pickle checkpoint.*--allow-pickle"):
        load_trained(path)
    model, process, config, _ = load_trained(path, allow_pickle=True)
    reference, *_ = load_trained(run_dir)
    assert process.name == "hold" and config.model.hidden == 16
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)  # the EMA weights, as from the safetensors checkpoint


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_malicious_pickle_never_runs_even_when_allowed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": {"w": _RunsCode(str(marker))}}, path)
    for allow in (False, True):
        with pytest.raises(ValueError) as info:
            load_trained(path, allow_pickle=allow)
        assert "\n" not in str(info.value)
    assert re.search(r"UnpicklingError: .*global", str(info.value), re.IGNORECASE)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"w": torch.zeros(2)}, r"must hold a dict \{'config': dict, 'model': state dict"),
        ([torch.zeros(2)], r"must hold a dict"),
        ({"config": "toy", "model": {}}, r"must hold a dict"),
        ({"config": {}, "model": {"w": [1.0]}}, r"'model' must map names to tensors"),
        ({"config": {}, "model": {}, "ema": 3}, r"'ema' must map names to tensors"),
        ({"config": {}, "model": {}, "step": -1}, r"'step' must be an integer ≥ 0"),
    ],
    ids=["bare state dict", "list", "config not a dict", "non-tensor", "ema", "step"],
)
def test_pickle_layouts_that_are_refused(tmp_path, payload, message):
    path = tmp_path / "x.pth"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, allow_pickle=True)


def test_a_changed_preset_default_is_detected_on_load_and_resume(run_dir, monkeypatch):
    from phasediff.processes import presets

    monkeypatch.setitem(PRESETS, "hold", functools.partial(presets.hold, gamma=0.5))
    expected = (
        r"was trained with a different process than preset 'hold' builds now "
        r"\(A\[1\]\[2\] is 3\.26599 in the checkpoint but 0\.5 now\); pin the old values"
    )
    with pytest.raises(ValueError, match=expected):
        load_trained(run_dir)
    with pytest.raises(ValueError, match=expected):
        Trainer(tiny(), run_dir, resume=True, progress=False)


def _foreign(run_dir: Path, dest: Path, edit) -> Path:
    """A well-formed checkpoint (valid checksums) whose tensors/config were edited."""
    meta, tensors = _state(run_dir)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "step")}
    edit(meta, tensors)
    return save_checkpoint(dest, 4, tensors, meta)


FOREIGN = {
    "wrong shape": (
        # the shipped toy configs wrap the MLP in a Preconditioned model: its MLP is `net`
        lambda m, t: t.update({"model.net.net.0.weight": torch.zeros(3, 3)}),
        r"tensor 'net\.net\.0\.weight' has shape \(3, 3\) in the checkpoint but \(16, \d+\) in the "
        r"network built from its config",
    ),
    "missing tensor": (
        lambda m, t: t.pop("model.net.net.0.bias"),
        r"tensor 'net\.net\.0\.bias' is missing from the checkpoint",
    ),
    "extra tensor": (
        lambda m, t: t.update({"model.head.weight": torch.zeros(1)}),
        r"the checkpoint has tensor 'head\.weight', which the network does not have",
    ),
    "other width": (
        lambda m, t: m["config"]["model"].update(hidden=32),
        r"has shape \(16, \d+\) in the checkpoint but \(32, \d+\)",
    ),
    "invalid config": (
        lambda m, t: m["config"]["train"].update(lr=-1),
        r"holds an invalid config: config field 'train\.lr' is invalid",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_checkpoints_give_a_clear_mismatch(run_dir, tmp_path, case):
    edit, message = FOREIGN[case]
    path = _foreign(run_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as info:
        load_trained(path)
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


# ============================================================== the CLI bad-input table
@pytest.fixture()
def files(run_dir, tmp_path, monkeypatch) -> dict[str, str]:
    """Paths the CLI cases refer to as {name}; the working directory is a fresh tmp dir."""
    monkeypatch.chdir(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 16)
    (tmp_path / "junk.json").write_bytes(junk.read_bytes())
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("not a directory\n")
    (tmp_path / "bad.toml").write_text("[train\nsteps = 3\n")
    (tmp_path / "unknown_key.toml").write_text("[train]\nstepz = 3\n")
    (tmp_path / "unknown_section.toml").write_text("[optimizer]\nname = 'sgd'\n")
    (tmp_path / "plain.json").write_text('{"step": 4}')
    (tmp_path / "out.npz").mkdir()
    cut = copy_run(run_dir, tmp_path / "cut")
    _damage_truncate_tensors(cut / "checkpoints" / "step_00000004.json")
    gone = copy_run(run_dir, tmp_path / "gone")
    _damage_delete_tensors(gone / "checkpoints" / "step_00000004.json")
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    torch.save({"config": {}, "model": {"w": _RunsCode(str(tmp_path / "pwned"))}}, "evil.pt")
    _foreign(run_dir, tmp_path / "foreign", FOREIGN["wrong shape"][0])
    return {
        "cfg": CONFIG,
        "run": str(run_dir),
        "tmp": str(tmp_path),
        "junk": str(junk),
        "cut": str(cut / "checkpoints" / "step_00000004.json"),
        "gone": str(gone / "checkpoints" / "step_00000004.json"),
        "foreign": str(tmp_path / "foreign" / "step_00000004.json"),
    }


def _train(*args: str) -> list[str]:
    return ["train", "{cfg}", "--out", "{tmp}/r", "--no-progress", *args]


def _set(*pairs: str) -> list[str]:
    return _train(*[x for p in pairs for x in ("--set", p)])


# (id, argv with {placeholders}, exit status, regex the output must contain)
CLI_CASES = [
    # --- train: config files
    ("config missing", ["train", "nope.toml", "--out", "r"], 2, r"'nope.toml' does not exist"),
    ("config is a dir", ["train", "a_dir", "--out", "r"], 2, r"'a_dir' is a directory"),
    ("config binary", ["train", "{junk}", "--out", "r"], 2, r"is not a UTF-8 text file"),
    ("config bad TOML", ["train", "bad.toml", "--out", "r"], 2, r"is not valid TOML \("),
    ("config unknown key", ["train", "unknown_key.toml", "--out", "r"], 2, r"'train.stepz' is not"),
    ("config unknown section", ["train", "unknown_section.toml", "--out", "r"], 2, r"'optimizer'"),
    ("config empty path", ["train", "", "--out", "r"], 2, r"config file '\.' is a directory"),
    # --- train: --set values
    ("set without =", _train("--set", "train.steps"), 2, r"--set expects key=value"),
    ("set empty key", _train("--set", "=3"), 2, r"non-empty key before '='"),
    ("set under a value", _set("train.steps.x=3"), 2, r"'steps' is a value, not a section"),
    (
        "steps zero",
        _set("train.steps=0"),
        2,
        r"'train.steps' is invalid: .*greater than or equal to 1",
    ),
    ("steps negative", _set("train.steps=-5"), 2, r"'train.steps' is invalid"),
    ("steps float", _set("train.steps=1.5"), 2, r"'train.steps' is invalid: .*valid integer"),
    ("steps string", _set("train.steps='ten'"), 2, r"'train.steps' is invalid"),
    ("lr zero", _set("train.lr=0"), 2, r"'train.lr' is invalid: Input should be greater than 0"),
    ("lr NaN", _set("train.lr=nan"), 2, r"'train.lr' is invalid: Input should be a finite number"),
    ("lr Inf", _set("train.lr=inf"), 2, r"'train.lr' is invalid: Input should be a finite number"),
    ("betas range", _set("train.betas=[1.5,0.9]"), 2, r"AdamW betas must lie in \[0, 1\)"),
    ("betas length", _set("train.betas=[0.9]"), 2, r"'train.betas"),
    ("ema decay", _set("train.ema_decay=1.5"), 2, r"'train.ema_decay' is invalid"),
    ("batch size zero", _set("train.batch_size=0"), 2, r"'train.batch_size' is invalid"),
    ("seed negative", _set("seed=-1"), 2, r"'seed' is invalid"),
    ("n_train zero", _set("data.n_train=0"), 2, r"'data.n_train' is invalid"),
    ("residual not a bool", _set("model.residual=maybe"), 2, r"'model.residual' is invalid"),
    ("mults dtype", _set("model.mults=[1.5]"), 2, r"'model.mults.0' is invalid"),
    ("device unknown", _set("train.device='tpu'"), 2, r"'tpu' is not a device; use 'cpu'"),
    ("skip negative", _set("train.skip_nonfinite=-1"), 2, r"'train.skip_nonfinite' is invalid"),
    # --- train: process
    ("unknown preset", _set("process.preset='told'"), 2, r"valid presets are: .*hold.*vp"),
    ("beta zero", _set("process.params.beta=0"), 2, r"beta must be a finite number > 0, got 0"),
    ("beta negative", _set("process.params.beta=-1"), 2, r"beta must be a finite number > 0"),
    ("beta NaN", _set("process.params.beta=nan"), 2, r"'beta' must be a finite number"),
    ("beta Inf", _set("process.params.beta=inf"), 2, r"'beta' must be a finite number"),
    ("beta string", _set("process.params.beta='x'"), 2, r"'beta' must be a finite number"),
    ("unknown preset arg", _set("process.params.bogus=1"), 2, r"bad arguments for preset 'hold'"),
    (
        "order zero",
        _set("process.preset='critical'", "process.params.k=0"),
        2,
        r"order k must be an integer ≥ 1, got 0",
    ),
    (
        "coupling count",
        _set(
            "process.preset='langevin_chain'",
            "process.params.k=3",
            "process.params.couplings=[1.0]",
        ),
        2,
        r"k − 1 = 2 entries",
    ),
    (
        "negative mass",
        _set(
            "process.preset='langevin_chain'",
            "process.params.k=3",
            "process.params.masses=[1.0,-2.0]",
        ),
        2,
        r"masses must be k − 1 = 2",
    ),
    # --- train: objective, model, data
    ("unknown objective", _set("objective.name='elbo'"), 2, r"valid objectives are: .*dsm.*hsm"),
    ("unknown weighting", _set("objective.weighting='x'"), 2, r"valid weightings are: eps"),
    ("unknown model kind", _set("model.kind='resnet'"), 2, r"Input should be 'mlp' or 'unet'"),
    ("unet on vectors", _set("model.kind='unet'"), 2, r"'unet' needs image data"),
    ("mlp on images", _set("data.name='digits'"), 2, r"'mlp' needs vector data"),
    ("unknown dataset", _set("data.name='cifar'"), 2, r"unknown dataset 'cifar'; valid datasets"),
    # --- train: run directory and options
    (
        "out under a file",
        ["train", "{cfg}", "--out", "a_file/run"],
        2,
        r"cannot write to run directory 'a_file/run' \(Not a directory\)",
    ),
    ("out is a file", ["train", "{cfg}", "--out", "a_file"], 2, r"cannot write to run directory"),
    ("resume nothing", _train("--resume"), 2, r"--resume was given but .* holds no checkpoint"),
    (
        "run exists",
        ["train", "{cfg}", "--out", "{run}"],
        2,
        r"already holds checkpoints; pass --resume",
    ),
    (
        "resume other model",
        ["train", "{cfg}", "--out", "{run}", "--resume", "--set", "model.hidden=64"],
        2,
        r"different model section; resume with the same config",
    ),
    (
        "skip flag negative",
        _train("--skip-nonfinite", "-1"),
        2,
        r"'--skip-nonfinite': .*greater than or equal to 0",
    ),
    (
        "skip flag text",
        _train("--skip-nonfinite", "many"),
        2,
        r"'--skip-nonfinite': Input should be a valid integer",
    ),
    ("unknown option", _train("--stepz", "3"), 2, r"No such option"),
    ("no --out", ["train", "{cfg}"], 2, r"Missing option '--out'"),
    # --- sample: checkpoints
    ("ckpt missing", ["sample", "nope"], 2, r"checkpoint path 'nope' does not exist"),
    ("ckpt empty dir", ["sample", "a_dir"], 2, r"no checkpoint \(step_\*\.json\) found under"),
    ("ckpt empty path", ["sample", ""], 2, r"no checkpoint \(step_\*\.json\) found under '\.'"),
    ("ckpt binary", ["sample", "junk.json"], 2, r"is not a readable checkpoint JSON"),
    ("ckpt text file", ["sample", "a_file"], 2, r"is not a readable checkpoint JSON"),
    ("ckpt foreign JSON", ["sample", "plain.json"], 2, r"is not a phasediff checkpoint"),
    ("ckpt truncated", ["sample", "{cut}"], 2, r"are corrupt \(checksum mismatch\)"),
    ("ckpt tensors gone", ["sample", "{gone}"], 2, r"step_00000004.safetensors' are missing"),
    ("ckpt wrong shapes", ["sample", "{foreign}"], 2, r"does not fit the network its config"),
    ("pickle refused", ["sample", "bare.pt"], 2, r"looks like a pickle checkpoint.*--allow-pickle"),
    ("pickle missing", ["sample", "nope.pt", "--allow-pickle"], 2, r"'nope.pt' does not exist"),
    ("pickle layout", ["sample", "bare.pt", "--allow-pickle"], 2, r"must hold a dict"),
    (
        "pickle runs code",
        ["sample", "evil.pt", "--allow-pickle"],
        2,
        r"(?i)UnpicklingError: .*global",
    ),
    ("pickle junk", ["sample", "{junk}", "--allow-pickle"], 2, r"torch.load\(weights_only=True\)"),
    # --- sample: options (sampler/steps/out/grid: tests/test_cli_sample.py)
    ("num zero", ["sample", "{run}", "--num", "0"], 2, r"--num must be ≥ 1, got 0"),
    ("steps negative", ["sample", "{run}", "--steps", "-3"], 2, r"--steps must be ≥ 1, got -3"),
    (
        "steps text",
        ["sample", "{run}", "--steps", "abc"],
        2,
        r"'--steps': Input should be a valid integer",
    ),
    (
        "seed text",
        ["sample", "{run}", "--seed", "x"],
        2,
        r"'--seed': Input should be a valid integer",
    ),
    (
        "sample out under a file",
        ["sample", "{run}", "--out", "a_file/s.npz", "--num", "4", "--steps", "1"],
        2,
        r"cannot write output \((Not a directory|File exists): a_file",
    ),
    (
        "sample out is a dir",
        ["sample", "{run}", "--out", "out.npz", "--num", "4", "--steps", "1"],
        2,
        r"cannot write output \(Is a directory",
    ),
    # --- demo and analyze
    ("demo steps zero", ["demo", "--steps", "0"], 2, r"--steps must be ≥ 1, got 0"),
    ("demo batch zero", ["demo", "--batch-size", "0"], 2, r"--batch-size must be ≥ 1, got 0"),
    ("demo sampler steps", ["demo", "--sampler-steps", "-1"], 2, r"--sampler-steps must be ≥ 1"),
    (
        "demo steps text",
        ["demo", "--steps", "1e9"],
        2,
        r"'--steps': Input should be a valid integer",
    ),
    ("mixing data var", ["analyze", "mixing", "--data-var", "-1"], 2, r"data_var must be a finite"),
    (
        "mixing eps NaN",
        ["analyze", "mixing", "--eps", "nan"],
        2,
        r"eps must be a finite number > 0",
    ),
    ("mixing out dir", ["analyze", "mixing", "--out", "a_dir"], 2, r"--out 'a_dir' is a directory"),
    ("mixing json dir", ["analyze", "mixing", "--json", "a_dir"], 2, r"--json 'a_dir' is a dir"),
    ("unknown command", ["trian"], 2, r"No such command 'trian'"),
]


@pytest.mark.parametrize(
    "argv, code, pattern", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input_is_one_sentence(files, monkeypatch, capsys, argv, code, pattern):
    argv = [a.format(**files) for a in argv]
    status, text = run_main(argv, monkeypatch, capsys)
    assert "Traceback" not in text, text
    assert status == code, text
    flat = " ".join(text.split()).replace("│", " ")  # click/rich may wrap usage errors
    assert re.search(pattern, " ".join(flat.split())), text
    if "error: " in text:  # our own messages: exactly one line, one sentence
        assert error_line(text).endswith((".", ")")), text
    assert not Path(files["tmp"], "pwned").exists()


def test_missing_or_corrupt_dataset_files_are_one_sentence(tmp_path, monkeypatch, capsys):
    from phasediff.data import digits

    unet = ["--set", "data.name='digits'", "--set", "model.kind='unet'", "--set", "model.base=4"]
    args = ["train", CONFIG, "--out", str(tmp_path / "r"), "--no-progress", *SETS, *unet]
    errors = {
        "missing": FileNotFoundError(2, "No such file or directory", "/data/digits.csv.gz"),
        "corrupt": EOFError("Compressed file ended before the end-of-stream marker"),
    }
    expected = {
        "missing": "error: dataset 'digits' could not be read (No such file or directory: "
        "/data/digits.csv.gz); check that its files exist and are intact.",
        "corrupt": "error: dataset 'digits' could not be read (EOFError); check that its "
        "files exist and are intact.",
    }
    for case, exc in errors.items():

        def broken(exc=exc):
            raise exc

        monkeypatch.setattr(digits, "_all_digits", broken)
        code, text = run_main(args, monkeypatch, capsys)
        assert code == 2 and "Traceback" not in text
        assert error_line(text) == expected[case]


def test_sample_accepts_an_allowed_pickle(run_dir, tmp_path, monkeypatch, capsys):
    meta, tensors = _state(run_dir)
    path = tmp_path / "model.pt"
    torch.save({"config": meta["config"], "model": ckpt.split_prefix(tensors, "model")}, path)
    out = tmp_path / "s.npz"
    argv = [
        "sample",
        str(path),
        "--allow-pickle",
        "--no-ema",
        "--num",
        "8",
        "--steps",
        "2",
        "--no-progress",
    ]
    code, text = run_main([*argv, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["num"] == 8 and out.exists()


def test_unexpected_errors_are_one_sentence_with_status_1(monkeypatch, capsys, tmp_path):
    """The last guard in main(): an error nobody anticipated is still one line, not a trace."""
    from phasediff import training

    def boom(*args, **kwargs):
        raise RuntimeError("deep inside torch\n  more detail")

    monkeypatch.setattr(training, "train", boom)
    code, text = run_main(["train", CONFIG, "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in text
    assert error_line(text) == (
        "error: unexpected RuntimeError: deep inside torch. "
        "Rerun with PHASEDIFF_DEBUG=1 for the traceback and please report it."
    )
    monkeypatch.setenv("PHASEDIFF_DEBUG", "1")
    with pytest.raises(RuntimeError, match="deep inside torch"):
        run_main(["train", CONFIG, "--out", str(tmp_path / "r")], monkeypatch, capsys)


# ============================================================== garbage at every command
def _leaf_commands() -> list[tuple[list[str], object]]:
    """(["analyze", "mixing"], command) for every command of the app, found at run time so
    that commands added later are covered too."""
    found = []

    def walk(cmd, path):
        if getattr(cmd, "commands", None):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            found.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return found


def _annotation(param) -> object:
    descriptor = getattr(param, "type_descriptor", None)
    return getattr(descriptor, "annotation", None)


def _required_filler(cmd, garbage: str) -> list[str]:
    """Argv giving every required argument `garbage` and every required option a harmless
    value, so that the command gets past parsing and meets the garbage."""
    argv = []
    for param in cmd.params:
        if isinstance(param, TyperArgument) and param.required:
            argv.append(garbage)
        elif isinstance(param, TyperOption) and param.required:
            argv += [param.opts[0], "{tmp}/garbage_out"]
    return argv


GARBAGE_VALUES = ["nope/missing.file", "a_dir", "{junk}", "", "a_file", "-5", "--", "%s\x00"]


def test_every_command_with_garbage_never_prints_a_traceback(files, monkeypatch, capsys):
    commands = _leaf_commands()
    names = {" ".join(path) for path, _ in commands}
    assert {"train", "sample", "demo", "analyze mixing"} <= names
    invocations = []
    for path, cmd in commands:
        invocations.append([*path, "--definitely-not-an-option"])
        for param in cmd.params:
            if not isinstance(param, TyperOption) or param.is_flag:
                continue
            bad = {
                int: ["abc", "", "1e999", "-", "0x"],
                float: ["abc", "", "-", "1,5"],  # not "1e999": that parses, as inf
            }.get(_annotation(param), [])
            invocations += [[*path, param.opts[0], value] for value in bad]
        if any(isinstance(p, TyperArgument) and p.required for p in cmd.params):
            invocations.append(path)  # a required argument missing
            for value in GARBAGE_VALUES:
                invocations.append([*path, *_required_filler(cmd, value)])
    assert len(invocations) >= 40
    code, text = run_main(["--help"], monkeypatch, capsys)
    assert code == 0 and all(path[0] in text for path, _ in commands)
    for path, _ in commands:  # every --help page renders
        code, text = run_main([*path, "--help"], monkeypatch, capsys)
        assert code == 0 and "Usage:" in text and "Traceback" not in text, (path, text)
    for argv in invocations:
        argv = [a.replace("{tmp}", files["tmp"]).replace("{junk}", files["junk"]) for a in argv]
        if "\x00" in "".join(argv):
            argv = [a.replace("\x00", "") for a in argv]  # argv cannot hold NUL
        code, text = run_main(argv, monkeypatch, capsys)
        assert "Traceback" not in text, (argv, text)
        assert code == 2, (argv, code, text)


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["train", "{junk}", "--out", "r"], r"^error: config file '.*junk.bin' is not a UTF-8"),
        (["sample", "evil.pt", "--allow-pickle"], r"^error: 'evil.pt' cannot be loaded"),
        (["sample", "a_dir", "--num", "x"], r"'--num': Input should be a valid integer"),
    ],
    ids=["junk config", "evil pickle", "usage error"],
)
def test_the_real_console_entry_point(files, argv, pattern):
    """`python -m phasediff.cli` in a subprocess: the process a user actually runs."""
    argv = [a.format(**files) for a in argv]
    res = subprocess.run(
        [sys.executable, "-m", "phasediff.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=files["tmp"],
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr
    assert re.search(pattern, res.stderr, re.MULTILINE), res.stderr
    assert not Path(files["tmp"], "pwned").exists()
