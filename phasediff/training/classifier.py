"""Noise-aware classifiers log p(c | z_t, t) on the full phase-space state, for classifier
guidance (``phasediff.samplers.conditional.ClassifierGuidance``; docs/images.md).

The classifier sees every block of z_t (x and the auxiliaries, stacked as channels like the
U-Net) and the time t, and is trained with cross-entropy on z_t drawn exactly from the
forward kernel of the run's process, z_t ~ N(e(t) x₀, Σ_t ⊗ I) with t ~ U[t_min, T] — the
same marginalised kernel as hybrid score matching. ``phasediff train-classifier
CONFIG_OR_RUN --out DIR`` writes ``DIR/classifier.safetensors`` (weights) and
``DIR/classifier.json`` (architecture, the process's matrices, training summary, SHA-256 of
the weights); nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from phasediff.files import atomic_write_bytes, atomic_write_text
from phasediff.models.embedding import TimeEmbedding
from phasediff.models.unet import Downsample, ResBlock, group_count
from phasediff.objectives import sample_times
from phasediff.processes import LinearProcess
from phasediff.training.checkpoint import process_mismatch
from phasediff.training.config import Config, config_from_dict, load_config
from phasediff.training.run import first_non_finite_gradient, non_finite_error, open_run_dir
from phasediff.validation import check_int, check_positive

__all__ = ["NoisyClassifier", "load_classifier", "train_classifier"]

FORMAT = "phasediff-classifier-v1"
WEIGHTS_FILE = "classifier.safetensors"
META_FILE = "classifier.json"


class NoisyClassifier(nn.Module):
    """Logits (B, n_classes) of the class of x₀ given (z_t, t).

    Images (C, H, W): conv3×3 on the k·C stacked channels → ResBlock(w) → stride-2 conv (when
    H and W are even) → ResBlock(2w) → GroupNorm, SiLU, global mean → linear. Vectors (d,):
    an MLP on the flattened k·d state with the time embedding added to each hidden layer.
    """

    def __init__(
        self,
        k: int,
        data_shape: tuple[int, ...],
        n_classes: int,
        *,
        width: int = 32,
        time_dim: int = 64,
        t_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.k = check_int(k, "k")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.n_classes = check_int(n_classes, "n_classes", 2)
        width = check_int(width, "width")
        time_dim = check_int(time_dim, "time_dim", 2)
        self.time_embed = TimeEmbedding(time_dim, time_dim, t_scale=t_scale)
        if len(self.data_shape) == 3:
            c, h, w = self.data_shape
            self.inp = nn.Conv2d(self.k * c, width, 3, padding=1)
            self.block1 = ResBlock(width, width, time_dim)
            even = h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4
            self.down = Downsample(width) if even else nn.Identity()
            self.block2 = ResBlock(width, 2 * width, time_dim)
            self.norm = nn.GroupNorm(group_count(2 * width), 2 * width)
            self.head = nn.Linear(2 * width, self.n_classes)
        elif len(self.data_shape) == 1:
            d = self.data_shape[0]
            self.inp_vec = nn.Linear(self.k * d, width)
            self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(2)])
            self.time_proj = nn.ModuleList([nn.Linear(time_dim, width) for _ in range(2)])
            self.head = nn.Linear(width, self.n_classes)
        else:
            raise ValueError(
                f"data_shape must be (C, H, W) for images or (d,) for vectors, got "
                f"{self.data_shape}."
            )

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        expected = (self.k, *self.data_shape)
        if not isinstance(z, torch.Tensor) or tuple(z.shape[1:]) != expected:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (B, {', '.join(map(str, expected))}), got {got}.")
        batch = z.shape[0]
        t = t if isinstance(t, torch.Tensor) else torch.full((batch,), float(t))
        temb = F.silu(self.time_embed(t.to(device=z.device, dtype=z.dtype).expand(batch)))
        if len(self.data_shape) == 3:
            c, h, w = self.data_shape
            x = self.inp(z.reshape(batch, self.k * c, h, w))
            x = self.block2(self.down(self.block1(x, temb)), temb)
            return self.head(F.silu(self.norm(x)).mean(dim=(2, 3)))
        x = F.silu(self.inp_vec(z.reshape(batch, -1)))
        for layer, proj in zip(self.hidden, self.time_proj, strict=True):
            x = F.silu(layer(x) + proj(temb))
        return self.head(x)

    def architecture(self) -> dict:
        return {
            "k": self.k,
            "data_shape": list(self.data_shape),
            "n_classes": self.n_classes,
            "width": self.inp.out_channels if hasattr(self, "inp") else self.inp_vec.out_features,
            "time_dim": self.time_embed.out_dim,
            "t_scale": float(self.time_embed.sinusoidal.t_scale),
        }


def _source_config(source: str | Path, overrides: list[str] | None) -> Config:
    """A run directory (its config.json) or a TOML config file."""
    path = Path(source)
    if path.is_dir():
        config_json = path / "config.json"
        if not config_json.is_file():
            raise ValueError(
                f"{str(path)!r} is a directory without config.json; pass a run directory "
                f"written by phasediff train or a TOML config."
            )
        try:
            raw = json.loads(config_json.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {str(config_json)!r} ({exc}).") from None
        if overrides:
            from phasediff.training.config import apply_overrides

            raw = apply_overrides(raw, overrides)
        return config_from_dict(raw)
    return load_config(path, overrides)


@torch.no_grad()
def _accuracy_by_time(clf, process, data, generator, n: int = 512) -> dict[str, float]:
    """Accuracy on fresh noisy training examples at a few fixed times (fractions of T)."""
    out = {}
    index = torch.randint(0, data.n_train, (n,), generator=generator)
    x0, y = data.data[index], data.labels[index]
    for frac in (0.0, 0.25, 0.5, 0.75):
        t_val = max(process.t_min, frac * process.T)
        t = torch.full((n,), t_val, dtype=torch.float64)
        z, _ = process.sample_marginal(x0, t, generator=generator)
        pred = clf(z, t.to(z.dtype)).argmax(1)
        out[f"t={t_val:.3g}"] = float((pred == y).float().mean())
    return out


def train_classifier(
    source: str | Path,
    out: str | Path,
    *,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 32,
    seed: int = 0,
    threads: int = 0,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Train a ``NoisyClassifier`` for the process and labelled dataset of ``source`` (run
    directory or TOML config) and save it in ``out``; returns a summary (accuracy at a few
    times on fresh noisy training examples)."""
    from tqdm import tqdm

    from phasediff.training.trainer import build_data, build_process

    steps, batch_size, width = (
        check_int(steps, "steps"),
        check_int(batch_size, "batch_size"),
        check_int(width, "width"),
    )
    check_positive(lr, "lr")
    if threads:
        torch.set_num_threads(check_int(threads, "threads"))
    config = _source_config(source, overrides)
    process = build_process(config)
    data = build_data(config)
    if data.labels is None:
        raise ValueError(
            f"dataset {data.name!r} has no class labels, so a classifier cannot be trained on "
            f"it; use digits, cifar10, mnist or an image folder with one subfolder per class."
        )
    out = Path(out)
    if (out / META_FILE).exists():
        raise ValueError(f"{str(out)!r} already holds a classifier; choose another --out.")
    open_run_dir(out, what="classifier directory")
    n_classes = int(data.labels.max()) + 1
    torch.manual_seed(seed)
    clf = NoisyClassifier(
        process.k, data.data_shape, max(n_classes, 2), width=width, t_scale=process.T
    )
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    window: list[float] = []
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="classifier"):
        index = torch.randint(0, data.n_train, (batch_size,), generator=gen)
        x0, y = data.data[index], data.labels[index]
        t = sample_times(process, batch_size, gen)
        z, _ = process.sample_marginal(x0, t, generator=gen)
        loss = F.cross_entropy(clf(z, t.to(z.dtype)), y)
        value = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        if not math.isfinite(value):  # the run skeleton's policy, with nothing to skip to
            raise non_finite_error(step, "loss")
        loss.backward()
        params = list(clf.parameters())
        total_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not math.isfinite(float(total_norm)):
            raise non_finite_error(step, first_non_finite_gradient(clf.named_parameters()))
        torch.nn.utils.clip_grads_with_norm_(params, 1.0, total_norm)
        opt.step()
        window = (window + [value])[-100:]
    clf.eval()
    accuracy = _accuracy_by_time(clf, process, data, torch.Generator().manual_seed(seed + 2))
    summary = {
        "out": str(out),
        "steps": steps,
        "final_loss": sum(window) / len(window),
        "accuracy_by_t": accuracy,
        "seconds": time.perf_counter() - started,
    }
    _save(out, clf, process, config, summary)
    return summary


def _save(out: Path, clf: NoisyClassifier, process: LinearProcess, config: Config, summary):
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous() for k, v in clf.state_dict().items()})
    meta = {
        "format": FORMAT,
        "architecture": clf.architecture(),
        "process": process.describe(),
        "config": config.model_dump(),
        "training": summary,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    atomic_write_bytes(out / WEIGHTS_FILE, blob)  # weights first, the JSON commits
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=1))


def load_classifier(
    path: str | Path, process: LinearProcess | None = None
) -> tuple[NoisyClassifier, dict]:
    """(classifier in eval mode, its JSON record) from a ``train_classifier`` directory. With
    ``process``, the classifier must have been trained for the same process matrices."""
    from safetensors.torch import load

    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ValueError(
            f"{str(folder)!r} holds no {META_FILE}; pass the --out directory of "
            f"phasediff train-classifier."
        )
    try:
        meta = json.loads(meta_path.read_text())
        blob = (folder / WEIGHTS_FILE).read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"classifier in {str(folder)!r} cannot be read ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{str(meta_path)!r} is not a phasediff classifier ({FORMAT}).")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ValueError(
            f"classifier weights {str(folder / WEIGHTS_FILE)!r} do not match the checksum in "
            f"{META_FILE}; the file is corrupt."
        )
    if process is not None:
        saved = meta.get("process", {})
        difference = process_mismatch(saved, process.describe())
        if difference:
            name = saved.get("name") if isinstance(saved, dict) else None
            detail = difference.replace("the checkpoint", "the classifier")
            which = (
                f"process {name!r}, not {process.name!r}"
                if name and name != process.name
                else f"other {process.name!r} matrices ({detail})"
            )
            raise ValueError(
                f"the classifier in {str(folder)!r} was trained for {which}; train one for "
                f"this run with phasediff train-classifier RUN."
            )
    try:
        arch = meta["architecture"]
        clf = NoisyClassifier(
            arch["k"],
            tuple(arch["data_shape"]),
            arch["n_classes"],
            width=arch["width"],
            time_dim=arch["time_dim"],
            t_scale=arch["t_scale"],
        )
        clf.load_state_dict(load(blob))
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"classifier in {str(folder)!r} does not match its recorded architecture ({exc})."
        ) from None
    return clf.eval(), meta
