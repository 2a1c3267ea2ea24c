"""Checkpoints: tensors in safetensors, everything else in JSON, never pickle (SPEC §5, §8).

A checkpoint `step_00001000` is two files in RUN_DIR/checkpoints/:
- `step_00001000.safetensors`: `model.*`, `ema.*` and `optim.<param index>.<state key>`;
- `step_00001000.json`: format tag, step, config, optimizer hyper-parameters, RNG states
  (base64) and the SHA-256 of the tensor file.
Both are written to a temporary file, fsynced and renamed; the JSON goes last and is the
commit marker, so a checkpoint is either complete and verified or ignored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "phasediff-checkpoint"
VERSION = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + fsync + rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_state(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def decode_state(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    meta: dict,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint `step` atomically; keep only the newest `keep_last`. Returns the JSON."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stem = f"step_{step:08d}"
    tensor_path = ckpt_dir / f"{stem}.safetensors"
    tmp = ckpt_dir / f".{stem}.safetensors.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, tensor_path)
    record = {"format": FORMAT, "version": VERSION, "step": step, **meta}
    record["tensors_file"] = tensor_path.name
    record["sha256"] = _sha256(tensor_path)
    json_path = ckpt_dir / f"{stem}.json"
    atomic_write_bytes(json_path, json.dumps(record, indent=1).encode())
    for old in list_checkpoints(ckpt_dir)[:-keep_last]:
        for p in (old, old.with_suffix(".safetensors")):
            p.unlink(missing_ok=True)
    return json_path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """JSON files of the checkpoints in a directory, oldest first."""
    return sorted(ckpt_dir.glob("step_*.json"))


def _resolve(path: Path) -> list[Path]:
    if path.is_dir():
        sub = path / "checkpoints"
        return list_checkpoints(sub if sub.is_dir() else path)
    if path.suffix == ".safetensors":
        return [path.with_suffix(".json")]
    return [path]


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of a checkpoint JSON/safetensors file or the newest valid one in a run
    directory; a corrupt newest checkpoint is skipped with a warning naming it."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
        raise ValueError(
            f"{str(path)!r} looks like a pickle checkpoint; phasediff only loads its own "
            f"safetensors + JSON checkpoints (pickles can run code)."
        )
    if not path.exists():
        raise ValueError(f"checkpoint path {str(path)!r} does not exist.")
    candidates = _resolve(path)
    if not candidates:
        raise ValueError(f"no checkpoint (step_*.json) found under {str(path)!r}.")
    errors = []
    for json_path in reversed(candidates):
        try:
            return _load_one(json_path)
        except ValueError as exc:
            errors.append(str(exc))
            if len(candidates) > 1:
                warnings.warn(f"skipping checkpoint {json_path}: {exc}", stacklevel=2)
    raise ValueError(errors[0] if len(errors) == 1 else f"no valid checkpoint under {path}.")


def _load_one(json_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(json_path)!r} is not a readable checkpoint JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{str(json_path)!r} is not a phasediff checkpoint (missing format tag).")
    tensor_path = json_path.with_name(meta.get("tensors_file", ""))
    if not tensor_path.is_file():
        raise ValueError(f"checkpoint tensors {str(tensor_path)!r} are missing.")
    if _sha256(tensor_path) != meta.get("sha256"):
        raise ValueError(
            f"checkpoint tensors {str(tensor_path)!r} are corrupt (checksum mismatch)."
        )
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(
            f"checkpoint tensors {str(tensor_path)!r} cannot be read ({exc})."
        ) from None
    return meta, tensors


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Sub-dict of the tensors whose keys start with `prefix.` (prefix removed)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
