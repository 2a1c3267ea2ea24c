"""Kill test (docs/design.md §8): SIGKILL a training process (the score trainer, and the
Hamiltonian-score-matching trainer, which shares its run skeleton) at random moments and inside
every step of the checkpoint writer; every restart must resume from the newest committed checkpoint,
no checkpoint may ever be corrupt, and the final weights, EMA, AdamW state, RNG state and metrics
log must equal those of an uninterrupted run with the same seed, bit for bit.

Training processes are forked from a multiprocessing fork server that imported torch and
phasediff once, so a restart costs milliseconds instead of the ~2.5 s of a fresh interpreter
(import torch + torch._dynamo, which AdamW pulls in). Each one is still a separate process,
killed with SIGKILL and replaced by a new one.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phasediff.training.checkpoint import list_checkpoints, load_checkpoint

# A tiny HOLD run: a checkpoint after every step (keep_last=2, so pruning runs every step too)
# and a metrics row after every step, so that "nothing lost" can be checked row by row.
OVERRIDES = [
    "train.batch_size=32",
    "train.log_every=1",
    "train.ckpt_every=1",
    "train.keep_last=2",
    "train.tensorboard=false",
    "train.threads=1",
    "train.warmup=5",
    "data.n_train=512",
    "model.hidden=32",
    "model.depth=2",
    "model.time_dim=16",
]
# The same for the Hamiltonian-score-matching trainer (two networks, two optimizers).
HAMILTONIAN_SM_OVERRIDES = [
    *(o for o in OVERRIDES if not o.startswith("model.")),
    "model.hidden=16",
    "model.depth=2",
    "model.time_dim=8",
    "hamiltonian_sm.velocity_steps=2",
    "hamiltonian_sm.leapfrog_steps=4",
]
FOREVER = 10**9  # `until` of a segment that is meant to be killed
RANDOM_KILLS = 22
# Kills inside the checkpoint writer: (os call, its index within one save, when), see _hang.
INJECTED = [
    ("write", 1, "half"),  # tensors half written to the temporary file
    ("replace", 1, "before"),  # tensors complete in the temporary file, not renamed
    ("replace", 1, "after"),  # tensors renamed, JSON (the commit marker) not yet written
    ("write", 2, "half"),  # JSON half written to its temporary file
    ("replace", 2, "before"),  # JSON complete but not renamed
    ("unlink", 1, "after"),  # pruning: an old JSON removed, its tensors not yet
]


def _config(kind: str = "score"):
    from phasediff.training import load_config

    if kind == "hamiltonian_sm":
        return load_config("configs/toy_hamiltonian_sm.toml", HAMILTONIAN_SM_OVERRIDES)
    return load_config("configs/toy_hold.toml", OVERRIDES)


def _event(log: str, text: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _hang(spec: tuple[str, int, str], log: str) -> None:
    """In this (forked, soon killed) process, make the `index`-th call of `op` inside the third
    checkpoint save block forever: before or after the real call, or after writing half of its
    data. An event "hang" tells the test to kill now."""
    import pathlib

    from phasediff.training import run as run_module  # every trainer saves through it

    op, index, when = spec
    state = {"save": 0, "calls": 0, "armed": False}
    real_save = run_module.save_checkpoint

    def save(*args, **kwargs):
        state["save"] += 1
        state["armed"] = state["save"] == 3
        try:
            return real_save(*args, **kwargs)
        finally:
            state["armed"] = False

    def block() -> None:
        _event(log, "hang")
        time.sleep(120)

    def wrap(real):
        def call(*args, **kwargs):
            if not state["armed"]:
                return real(*args, **kwargs)
            state["calls"] += 1
            if state["calls"] != index:
                return real(*args, **kwargs)
            if when == "before":
                block()
            if when == "half":
                fd, data = args
                real(fd, bytes(data[: len(data) // 2]))
                block()
            result = real(*args, **kwargs)
            block()
            return result

        return call

    run_module.save_checkpoint = save
    if op == "unlink":
        pathlib.Path.unlink = wrap(pathlib.Path.unlink)
    else:
        setattr(os, op, wrap(getattr(os, op)))


def _segment(
    run_dir: str, until: int, log: str, hang: tuple[str, int, str] | None, kind: str = "score"
) -> None:
    """One training process: resume if checkpoints exist, train to `until`, report events."""
    import warnings

    from phasediff.training import HamiltonianSMTrainer, Trainer

    torch.set_num_threads(1)
    if hang is not None:
        _hang(hang, log)
    resume = bool(list_checkpoints(Path(run_dir) / "checkpoints"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_class = HamiltonianSMTrainer if kind == "hamiltonian_sm" else Trainer
        trainer = trainer_class(_config(kind), run_dir, resume=resume, progress=False)
    for w in caught:
        _event(log, f"warning {str(w.message)!r}")
    _event(log, f"start {trainer.step}")
    trainer.fit(steps=until)
    _event(log, f"done {trainer.step}")


def _events(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _wait_for(log: Path, prefix: str, process, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in reversed(_events(log)):
            if line.startswith(prefix):
                return line
        if not process.is_alive():
            return None
        time.sleep(0.005)
    return None


def _committed(run_dir: Path) -> int:
    """Step of the newest checkpoint JSON on disk (0 if none); every one must load."""
    jsons = list_checkpoints(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    for path in jsons:
        load_checkpoint(path)  # raises ValueError if the checkpoint is corrupt
    return int(jsons[-1].stem.split("_")[1]) if jsons else 0


def _metric_rows(run_dir: Path) -> list[list[str]]:
    """Every column but the wall-clock seconds: step, the losses, lr, grad_norm, skipped."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [[v for k, v in r.items() if k != "seconds"] for r in rows]


@pytest.fixture(scope="module")
def fork_context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "phasediff.training", __name__])
    return ctx


def _kill_resume_and_compare(
    tmp_path: Path,
    fork_context,
    *,
    kind: str,
    seed: int,
    random_kills: int,
    injected: list[tuple[str, int, str]],
    min_steps: int,
    min_resumes: int,
    optimizer_prefixes: tuple[str, ...],
) -> None:
    """SIGKILL `random_kills` + len(injected) training processes of `kind` in turn, checking
    after each that every checkpoint loads and that the next process resumes from the newest;
    then finish the run and compare it with an uninterrupted one, bit for bit."""
    rng = random.Random(seed)  # the kill schedule is reproducible
    run_dir, log = tmp_path / "run", tmp_path / "events.log"
    schedule = [None] * random_kills + list(injected)
    rng.shuffle(schedule)
    t_start = time.monotonic()
    kills, expected_start, resumed_from = 0, 0, []
    for hang in schedule:
        log.unlink(missing_ok=True)
        proc = fork_context.Process(
            target=_segment, args=(str(run_dir), FOREVER, str(log), hang, kind)
        )
        proc.start()
        if hang is None:
            # a random moment: during start-up/resume (~0.1 s) or training (~25 ms a step,
            # most of it in the fsyncs of the checkpoint writer)
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            assert _wait_for(log, "hang", proc, timeout=30), (hang, _events(log))
        assert proc.is_alive(), f"the training process ended by itself: {_events(log)}"
        proc.kill()  # SIGKILL
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        started = [line for line in _events(log) if line.startswith("start")]
        if started:  # the killed process got as far as resuming: from the right step?
            assert started[0] == f"start {expected_start}", (hang, _events(log))
            resumed_from.append(expected_start)
        assert not any(line.startswith("warning") for line in _events(log)), _events(log)
        expected_start = _committed(run_dir)  # no checkpoint on disk is corrupt
    assert kills == len(schedule) and time.monotonic() - t_start < 90
    # real progress was made
    assert expected_start >= min_steps and len(set(resumed_from)) >= min_resumes

    # finish the run, then train the same config uninterrupted in one process
    final = expected_start + 5
    for directory, name in ((run_dir, "resumed"), (tmp_path / "reference", "reference")):
        log.unlink(missing_ok=True)
        proc = fork_context.Process(
            target=_segment, args=(str(directory), final, str(log), None, kind)
        )
        proc.start()
        proc.join(120)
        assert proc.exitcode == 0, (name, _events(log))
        assert _events(log)[-1] == f"done {final}", (name, _events(log))

    meta, tensors = load_checkpoint(run_dir)
    ref_meta, ref_tensors = load_checkpoint(tmp_path / "reference")
    assert meta["step"] == ref_meta["step"] == final
    assert sorted(tensors) == sorted(ref_tensors)
    for prefix in (*optimizer_prefixes, "ema."):
        assert any(k.startswith(prefix) for k in tensors), prefix
    for key in tensors:  # weights, EMA and AdamW moments: bit for bit
        assert torch.equal(tensors[key], ref_tensors[key]), key
    assert meta["generator_state"] == ref_meta["generator_state"]
    assert meta["torch_rng_state"] == ref_meta["torch_rng_state"]
    # the metrics log lost no row and kept no row of a step that was rolled back
    rows, ref_rows = _metric_rows(run_dir), _metric_rows(tmp_path / "reference")
    assert [int(r[0]) for r in ref_rows] == list(range(1, final + 1))
    assert rows == ref_rows
    # the writer cleaned up after every kill: only the newest keep_last = 2 checkpoints remain
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        f"step_{s:08d}.{ext}" for s in (final - 1, final) for ext in ("json", "safetensors")
    ]


def test_sigkill_at_random_moments_loses_and_corrupts_nothing(tmp_path, fork_context):
    _kill_resume_and_compare(
        tmp_path,
        fork_context,
        kind="score",
        seed=20240611,
        random_kills=RANDOM_KILLS,
        injected=INJECTED,
        min_steps=10,
        min_resumes=5,
        optimizer_prefixes=("optim.",),
    )


def test_hamiltonian_sm_trainer_survives_sigkill_like_the_score_trainer(tmp_path, fork_context):
    """The same kill test, shorter, for the Hamiltonian-score-matching trainer: its force,
    velocity predictor, EMA, both AdamW states, RNG states and metrics log survive 6 random
    kills and 3 kills inside the checkpoint writer bit for bit."""
    _kill_resume_and_compare(
        tmp_path,
        fork_context,
        kind="hamiltonian_sm",
        seed=20240612,
        random_kills=6,
        injected=[INJECTED[1], INJECTED[2], INJECTED[4]],
        min_steps=3,
        min_resumes=2,
        optimizer_prefixes=("optim_force.", "optim_velocity."),
    )


def test_cli_train_killed_then_resumed(tmp_path):
    """The real command: `python -m phasediff.cli train` is SIGKILLed after its first
    checkpoints, and `phasediff train --resume` finishes the run."""
    from typer.testing import CliRunner

    from phasediff.cli import app

    out = tmp_path / "run"
    args = ["configs/toy_hold.toml", "--out", str(out), "--no-progress"]
    sets = [x for o in [*OVERRIDES, "train.steps=100000"] for x in ("--set", o)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "phasediff.cli", "train", *args, *sets],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list_checkpoints(out / "checkpoints")) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.02)
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    committed = _committed(out)
    assert committed >= 2
    target = committed + 3
    sets = [x for o in [*OVERRIDES, f"train.steps={target}"] for x in ("--set", o)]
    res = CliRunner().invoke(app, ["train", *args, *sets, "--resume"])
    assert res.exit_code == 0, res.output
    assert f'"step": {target}' in res.output
    assert [int(r[0]) for r in _metric_rows(out)] == list(range(1, target + 1))
