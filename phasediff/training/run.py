"""The training-run skeleton every trainer shares (docs/training.md, "The run skeleton").

`TrainingRun` owns the plumbing of a run directory; a trainer subclasses it and writes only its
own step (`train_step`) and says which networks and optimizers make up its state:

- the run directory: refused when it already holds checkpoints and `resume` is off (and when
  `resume` is on but there is nothing to resume), created and probed for writability, and
  `config.json` written atomically;
- `metrics.csv` (`step, <the trainer's averaged columns>, lr, grad_norm, seconds, skipped`),
  cut back to the resumed step on resume (a row cut short by a kill is dropped, a log without
  the last columns is padded), and TensorBoard scalars unless `train.tensorboard = false`;
- checkpoints: the model tensors, the EMA, every optimizer's state, the run generator's and
  torch's RNG states and the count of skipped batches, written by `save_checkpoint` (atomic,
  JSON last) and restored bit for bit by `restore`;
- the EMA of the trained parameters (`train.ema_decay`);
- the learning rate as a function of the step: linear warm-up, then constant or cosine decay
  (`learning_rate`, one function for every trainer);
- the non-finite policy: a NaN/Inf loss or gradient raises `NonFiniteLossError` naming the step
  and the tensor, or skips the batch while `train.skip_nonfinite` allows (`skip_or_stop`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import torch

from phasediff.files import atomic_write_text
from phasediff.training.checkpoint import (
    decode_state,
    encode_state,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
)
from phasediff.training.config import Config, TrainConfig, config_from_dict
from phasediff.training.errors import NonFiniteLossError

__all__ = [
    "TrainingRun",
    "config_mismatch",
    "learning_rate",
    "metrics_fields",
    "non_finite_error",
    "open_run_dir",
    "truncate_metrics",
]

# the columns after a trainer's own averaged ones
METRICS_TAIL = ["lr", "grad_norm", "seconds", "skipped"]


def learning_rate(tc: TrainConfig, step: int, seconds: float | None = None) -> float:
    """The learning rate of `step`: linear warm-up over `train.warmup` steps, then constant or,
    with `train.lr_decay = "cosine"`, a cosine decay to `lr_min_ratio · lr` at `train.steps`.
    With a `train.time_limit` the decay also follows the clock: its progress is the larger of
    the share of the steps done and the share of the time limit spent (`seconds` of training
    so far, carried across resumes by the checkpoints), so an equal-wall-time run ends its
    decay when its time is up (docs/training.md). Without a time limit, a function of the step
    only, so a resumed run continues exactly."""
    scale = min(1.0, step / tc.warmup) if tc.warmup else 1.0
    if tc.lr_decay == "cosine" and step > tc.warmup:
        span = max(tc.steps - tc.warmup, 1)
        done = min(1.0, (step - tc.warmup) / span)
        if tc.time_limit and seconds is not None:
            done = max(done, min(1.0, seconds / (60.0 * tc.time_limit)))
        scale = tc.lr_min_ratio + (1 - tc.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * done))
    return tc.lr * scale


def metrics_fields(averaged: tuple[str, ...] | list[str]) -> list[str]:
    """The header of metrics.csv for a trainer whose window-averaged columns are `averaged`."""
    return ["step", *averaged, *METRICS_TAIL]


def truncate_metrics(path: Path, step: int, fields: list[str]) -> None:
    """Drop rows logged after `step` (a run killed after its last checkpoint), and a last row
    cut short by a kill; a log begun before its last columns existed has its rows padded
    with 0 (e.g. `skipped`). Rewritten atomically: a kill here keeps the old log."""
    if not path.exists():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):  # a row cut short by a kill
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        path.unlink()
        return
    header, body = rows[0], rows[1:]
    if len(header) < len(fields) and header == fields[: len(header)]:
        # a log begun before the last columns existed: pad its rows (e.g. skipped = 0)
        body = [r + ["0"] * (len(fields) - len(r)) if len(r) == len(header) else r for r in body]
        header = fields
    kept = [header] + [
        r for r in body if len(r) == len(header) and r[0].isdigit() and int(r[0]) <= step
    ]
    out = io.StringIO(newline="")
    csv.writer(out).writerows(kept)
    atomic_write_text(path, out.getvalue())


def open_run_dir(run_dir: Path, *, probe: bool = True, what: str = "run directory") -> None:
    """Create `run_dir` and check that it can be written to (one ValueError sentence naming it
    as `what` if not)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if probe:
            marker = run_dir / ".write_test"
            marker.write_text("ok")
            marker.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write to {what} {str(run_dir)!r} ({exc.strerror}).") from None


def non_finite_error(
    step: int, tensor: str, *, skipped: int = 0, allowed: int = 0, ckpt_dir: Path | None = None
) -> NonFiniteLossError:
    """The error that stops training at a non-finite `tensor` ("loss", "gradient of 'w'", …)
    of `step`, naming the checkpoint that is kept."""
    kept = list_checkpoints(ckpt_dir) if ckpt_dir is not None and ckpt_dir.is_dir() else []
    outcome = (
        f"the last good checkpoint {str(kept[-1])!r} is kept"
        if kept
        else "no checkpoint had been written yet"
    )
    budget = (
        f" after skipping {skipped} bad batches (--skip-nonfinite {allowed})" if allowed else ""
    )
    return NonFiniteLossError(
        f"non-finite {tensor} at step {step}{budget}; training stopped and {outcome}.",
        step=step,
        tensor=tensor,
    )


def first_non_finite_gradient(named_parameters, prefix: str = "") -> str:
    """'gradient of <name>' for the first parameter whose gradient holds a NaN/Inf."""
    for name, p in named_parameters:
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of {prefix + name!r}"
    return "gradient norm"


def config_mismatch(saved: Config, current: Config, sections: tuple[str, ...]) -> str | None:
    """'<section> section' for the first of `sections` that differs (a dataset moved to another
    folder is still the same data), or None."""
    for section in sections:
        if section == "data":
            a = saved.data.model_copy(update={"path": None})
            b = current.data.model_copy(update={"path": None})
            if a != b:
                return "data section"
        elif getattr(saved, section) != getattr(current, section):
            return f"{section} section"
    return None


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """The optimizer's state as `<prefix>.<param index>.<key>` tensors."""
    tensors = {}
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value)
    return tensors


def optimizer_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The optimizer's hyper-parameters (its param groups without the parameters), for JSON."""
    return [
        {k: v for k, v in g.items() if k != "params"}
        for g in optimizer.state_dict()["param_groups"]
    ]


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    """Restore what `optimizer_tensors` (prefix removed) and `optimizer_groups` saved."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    current_groups = optimizer.state_dict()["param_groups"]
    for g, current in zip(groups, current_groups, strict=True):
        g["params"] = current["params"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


class TrainingRun:
    """The run plumbing of one training run in `run_dir` (see the module docstring).

    A subclass calls `__init__` before building anything that draws from torch's global RNG
    (it seeds it with `config.seed`), builds its networks and optimizers, declares the EMA
    parameters with `track_ema`, then calls `begin()` (resume, then config.json). It
    implements:

    - `train_step()`: one step; returns `(*averaged values, grad_norm)` and advances
      `self.step`, or returns `self.skip_or_stop(step, tensor)` on a NaN/Inf;
    - `model_tensors()` / `load_model_tensors(meta, tensors)`: its networks' tensors in a
      checkpoint (the EMA and the optimizers are handled here);
    - `optimizers()`: `(tensor prefix, JSON key, optimizer)` of every optimizer to checkpoint;
    - optionally `checkpoint_meta()`, `check_checkpoint(meta, tensors)`, `after_restore(meta)`,
      `after_restore_hook()`, `record(values)`, `after_step()`, `end_fit()`, `close()`,
      `final_metrics()`, `parameter_count()`.
    """

    averaged: tuple[str, ...] = ("loss",)  # metrics columns averaged over a logging window
    resume_sections: tuple[str, ...] = ("model", "data")  # must match to resume
    description = "training"  # for the error of a checkpoint that cannot be resumed

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        is_main: bool = True,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        self.resume = resume
        self.is_main = is_main  # only the main process writes (DDP: rank 0)
        self.device = device if device is not None else torch.device("cpu")
        has_ckpt = self.ckpt_dir.is_dir() and bool(list_checkpoints(self.ckpt_dir))
        if has_ckpt and not resume:
            raise ValueError(
                f"run directory {str(self.run_dir)!r} already holds checkpoints; pass --resume "
                f"to continue it or choose another --out."
            )
        if resume and not has_ckpt:
            raise ValueError(f"--resume was given but {str(self.run_dir)!r} holds no checkpoint.")
        open_run_dir(self.run_dir, probe=is_main)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed + 1)
        self.step = 0
        self.skipped = 0  # non-finite batches skipped so far (train.skip_nonfinite)
        self.seconds_before = 0.0  # training seconds of earlier sessions (`restore`)
        self._session_start: float | None = None  # perf_counter at this `fit`'s start
        self.history: list[tuple[float, ...]] = []  # the averaged values of every kept step
        self.ema: list[torch.Tensor] = []
        self._ema_params: list[tuple[str, torch.nn.Parameter]] = []

    # ----------------------------------------------------------------- set-up
    def track_ema(self, named_parameters) -> None:
        """Keep an exponential moving average (train.ema_decay) of these parameters."""
        self._ema_params = list(named_parameters)
        self.ema = [p.detach().clone() for _, p in self._ema_params]

    def begin(self) -> None:
        """Resume from the newest valid checkpoint if asked, then write config.json."""
        if self.resume:
            self.restore(load_checkpoint(self.ckpt_dir))
        self.after_restore_hook()
        if self.is_main:
            text = json.dumps(self.config.model_dump(), indent=1)
            atomic_write_text(self.run_dir / "config.json", text)

    def after_restore_hook(self) -> None:
        """Called by `begin` after the (optional) resume, before config.json is written."""

    # ----------------------------------------------------------------- step helpers
    @property
    def metrics_fields(self) -> list[str]:
        return metrics_fields(self.averaged)

    def lr_at(self, step: int) -> float:
        """The learning rate of `step` (`learning_rate`, on the run's training clock)."""
        return learning_rate(self.config.train, step, self.train_seconds())

    def train_seconds(self) -> float:
        """Seconds of training so far: those of earlier sessions (from the checkpoint) plus
        this one's, while `fit` runs."""
        start = self._session_start
        return self.seconds_before + (time.perf_counter() - start if start is not None else 0.0)

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay of the update made by optimizer step `step` (1-based): train.ema_decay,
        or with train.ema_warmup min(ema_decay, (1 + step)/(10 + step)), so the average of a
        short run is not dominated by the initial weights (docs/training.md, "EMA")."""
        decay = self.config.train.ema_decay
        if self.config.train.ema_warmup:
            decay = min(decay, (1.0 + step) / (10.0 + step))
        return decay

    def update_ema(self) -> None:
        decay = self.ema_decay_at(self.step + 1)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for _, p in self._ema_params], 1.0 - decay)

    def skip_or_stop(self, step: int, tensor: str) -> tuple[float, ...]:
        """The batch of `step` had a non-finite `tensor`: raise NonFiniteLossError, or, while
        fewer than `train.skip_nonfinite` batches were skipped, skip it: the step counter
        advances (the batch is consumed, so resume stays exact), `self.skipped` grows, a
        warning is printed and NaNs are returned. The caller must not have updated anything."""
        for _, _, optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)
        allowed = self.config.train.skip_nonfinite
        if self.skipped >= allowed:
            raise non_finite_error(
                step, tensor, skipped=self.skipped, allowed=allowed, ckpt_dir=self.ckpt_dir
            )
        self.skipped += 1
        self.step = step
        from tqdm import tqdm

        tqdm.write(
            f"warning: skipped the batch of step {step} (non-finite {tensor}); "
            f"{self.skipped} of {allowed} allowed skips used.",
            file=sys.stderr,
        )
        return (math.nan,) * (len(self.averaged) + 1)

    # ----------------------------------------------------------------- hooks
    def train_step(self) -> tuple[float, ...]:
        raise NotImplementedError

    def model_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_model_tensors(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def optimizers(self) -> list[tuple[str, str, torch.optim.Optimizer]]:
        raise NotImplementedError

    def checkpoint_meta(self) -> dict:
        """Extra JSON entries of a checkpoint."""
        return {}

    def check_checkpoint(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Refuse (ValueError) a checkpoint this run cannot continue, before anything loads."""

    def after_restore(self, meta: dict) -> None:
        """Restore extra state from a checkpoint's JSON (inside the guarded block)."""

    def record(self, values: tuple[float, ...]) -> None:
        """Keep the averaged values of a step that was not skipped."""
        self.history.append(values)

    def after_step(self) -> None:
        """Work after a step's log row and checkpoint (e.g. sample images)."""

    def end_fit(self) -> None:
        """Work at the end of `fit` (e.g. a DDP barrier)."""

    def close(self) -> None:
        """Release what the run holds beyond its own lifetime (e.g. a DDP process group)."""

    def final_metrics(self) -> dict:
        last = self.history[-1] if self.history else (math.nan,) * len(self.averaged)
        return {f"final_{name}": value for name, value in zip(self.averaged, last, strict=True)}

    def parameter_count(self) -> int:
        return sum(p.numel() for _, p in self._ema_params)

    @property
    def progress_label(self) -> str:
        return self.config.name

    # ----------------------------------------------------------------- the loop
    def fit(self, steps: int | None = None) -> dict:
        """Train until `steps` (default config.train.steps); returns a summary dict."""
        from tqdm import tqdm

        tc = self.config.train
        target = tc.steps if steps is None else steps
        self.out_of_time = False
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if tc.time_limit and distributed:
            raise ValueError(
                "train.time_limit stops one process by its own clock, which would leave the other "
                "ranks of a distributed run waiting; set train.steps instead (time_limit = 0)."
            )
        csv_path = self.run_dir / "metrics.csv"
        main = self.is_main  # only the main process writes logs, checkpoints and images
        fields = self.metrics_fields
        if main:
            truncate_metrics(csv_path, self.step, fields)
        new_file = not csv_path.exists()
        writer_tb = _tensorboard(self.run_dir) if tc.tensorboard and main else None
        t_start = time.perf_counter()
        self._session_start = t_start
        window: list[tuple[float, ...]] = []
        bar = tqdm(
            total=target,
            initial=self.step,
            disable=not self.progress or not main,
            desc=self.progress_label,
            dynamic_ncols=True,
        )
        n = len(self.averaged)
        with open(csv_path, "a", newline="") if main else io.StringIO() as fh:
            writer = csv.writer(fh)
            if new_file:
                writer.writerow(fields)
            # train.time_limit counts the run's training clock, across resumes: a resumed run
            # gets what is left of it (raise the limit with --set to train on)
            budget = 60.0 * tc.time_limit - self.seconds_before
            deadline = t_start + budget if tc.time_limit else math.inf
            if tc.time_limit and budget <= 0 and main:
                print(
                    f"train.time_limit: the run has trained {self.seconds_before / 60:.2f} of its "
                    f"{tc.time_limit:g} minutes; raise train.time_limit (--set) to train on.",
                    file=sys.stderr,
                )
            start_step = self.step
            grad_norm = math.nan

            def log_row(grad_norm: float) -> None:
                """One metrics.csv row (and TensorBoard scalars): the window's means."""
                means = [
                    sum(w[i] for w in window) / len(window) if window else math.nan
                    for i in range(n)
                ]
                window.clear()
                elapsed = time.perf_counter() - t_start
                lr = self.lr_at(self.step)
                writer.writerow(
                    [
                        self.step,
                        *(f"{m:.6g}" for m in means),
                        f"{lr:.6g}",
                        f"{grad_norm:.4g}",
                        f"{elapsed:.2f}",
                        str(self.skipped),
                    ]
                )
                fh.flush()
                bar.set_postfix({self.averaged[-1]: f"{means[-1]:.4f}"})
                if writer_tb is not None:
                    for name, m in zip(self.averaged, means, strict=True):
                        writer_tb.add_scalar(name, m, self.step)
                    writer_tb.add_scalar("lr", lr, self.step)

            while self.step < target:
                if time.perf_counter() >= deadline:  # train.time_limit: stop with a checkpoint
                    self.out_of_time = True
                    if window:  # the partial window's row, so the log ends at the saved step
                        log_row(grad_norm)
                    if main and self.step > start_step:
                        self.save()
                    break
                skipped_before = self.skipped
                *values, grad_norm = self.train_step()
                if self.skipped == skipped_before:  # skipped batches log no loss
                    self.record(tuple(values))
                    window.append(tuple(values))
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == target:
                    log_row(grad_norm)
                if self.step % tc.ckpt_every == 0 or self.step == target:
                    self.save()
                self.after_step()
        bar.close()
        self.seconds_before, self._session_start = self.train_seconds(), None
        self.end_fit()
        if writer_tb is not None:
            writer_tb.close()
        return {
            "step": self.step,
            "stopped_by_time_limit": self.out_of_time,
            **self.final_metrics(),
            "seconds": time.perf_counter() - t_start,
            "skipped_nonfinite": self.skipped,
            "parameters": self.parameter_count(),
            "run_dir": str(self.run_dir),
        }

    # ----------------------------------------------------------------- checkpoints
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the run's state: the model's, `ema.<name>`, the optimizers'."""
        tensors = self.model_tensors()
        names = [n for n, _ in self._ema_params]
        tensors.update({f"ema.{n}": e for n, e in zip(names, self.ema, strict=True)})
        for prefix, _, optimizer in self.optimizers():
            tensors.update(optimizer_tensors(optimizer, prefix))
        return tensors

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process only; others return None)."""
        if not self.is_main:
            return None
        meta = {"config": self.config.model_dump()}
        for _, key, optimizer in self.optimizers():
            meta[key] = {"param_groups": optimizer_groups(optimizer)}
        meta["generator_state"] = encode_state(self.generator.get_state())
        meta["torch_rng_state"] = encode_state(torch.get_rng_state())
        meta.update(self.checkpoint_meta())
        meta["skipped_nonfinite"] = self.skipped
        meta["train_seconds"] = self.train_seconds()
        return save_checkpoint(
            self.ckpt_dir, self.step, self.state_tensors(), meta, self.config.train.keep_last
        )

    def restore(self, loaded: tuple[dict, dict[str, torch.Tensor]]) -> None:
        """Continue from a checkpoint `(meta, tensors)`: the same config sections
        (`resume_sections`), then the model, EMA, optimizers, RNG states and step."""
        meta, tensors = loaded
        saved = config_from_dict(meta["config"])
        mismatch = config_mismatch(saved, self.config, self.resume_sections)
        if mismatch:
            raise ValueError(
                f"the checkpoint in {str(self.ckpt_dir)!r} was trained with a different "
                f"{mismatch}; resume with the same config."
            )
        self.check_checkpoint(meta, tensors)
        try:
            self.load_model_tensors(meta, tensors)
            ema = split_prefix(tensors, "ema")
            self.ema = [ema[n].to(self.device).clone() for n, _ in self._ema_params]
            for prefix, key, optimizer in self.optimizers():
                groups = meta[key]["param_groups"]
                load_optimizer(optimizer, split_prefix(tensors, prefix), groups)
            self.generator.set_state(decode_state(meta["generator_state"]))
            torch.set_rng_state(decode_state(meta["torch_rng_state"]))
            self.after_restore(meta)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"the checkpoint in {str(self.ckpt_dir)!r} cannot be resumed from: its "
                f"{self.description} state is incomplete ({type(exc).__name__}: {exc})."
            ) from None
        self.step = int(meta["step"])
        self.skipped = int(meta.get("skipped_nonfinite", 0))
        self.seconds_before = float(meta.get("train_seconds", 0.0))  # older checkpoints: 0


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a pinned dependency; tolerate its absence anyway
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))
