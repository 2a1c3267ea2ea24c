"""Checkpoints: tensors in safetensors, everything else in JSON, never pickle
(docs/design.md §5, §8).

A checkpoint `step_00001000` is two files in RUN_DIR/checkpoints/:
- `step_00001000.safetensors`: `model.*`, `ema.*` and `optim.<param index>.<state key>`;
- `step_00001000.json`: format tag, step, config, optimizer hyper-parameters, RNG states
  (base64), the process description, the SHA-256 of the tensor file (`sha256`) and of the
  JSON record itself (`meta_sha256`, computed with that key left out).

Crash safety (docs/reliability.md): every file is written to a temporary name, fsynced and
renamed, then the directory is fsynced. The tensors go first and the JSON last: the JSON is
the commit marker, so at any instant a JSON on disk names a complete tensor file with the
right checksum, and a checkpoint is either complete and verified or ignored. A write that
fails (disk full, read-only disk) removes its temporary files, raises `CheckpointWriteError`
and leaves every older checkpoint untouched. Only the newest `keep_last` are kept.

Loading never runs code: JSON is parsed, tensors come from safetensors. Pickled `.pt`/`.pth`
files are refused unless `allow_pickle=True`, and then read with
`torch.load(weights_only=True)` (see `load_pickle_checkpoint` for the accepted layout).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import re
import warnings
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from phasediff.files import atomic_write_bytes, fsync_dir

FORMAT = "phasediff-checkpoint"
PICKLE_FORMAT = "torch-pickle"
VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
_STEP_NAME = re.compile(r"^step_(\d+)\.json$")
_TENSORS_NAME = re.compile(r"^step_(\d+)\.safetensors$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, unwritable directory); the older
    checkpoints are intact. str() is one sentence naming the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


# ----------------------------------------------------------------------------- writing
# Files are written by `phasediff.files.atomic_write_bytes`, looked up here at call time (tests
# replace `phasediff.training.checkpoint.atomic_write_bytes` to simulate a full disk).


def _meta_digest(record: dict) -> str:
    """SHA-256 of the JSON record without its own `meta_sha256` key (canonical dump)."""
    body = {k: v for k, v in record.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def encode_state(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def decode_state(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def _step_of(path: Path) -> int:
    match = _STEP_NAME.match(path.name) or _TENSORS_NAME.match(path.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """JSON files of the checkpoints in a directory, oldest (smallest step) first."""
    found = [p for p in Path(ckpt_dir).glob("step_*.json") if _STEP_NAME.match(p.name)]
    return sorted(found, key=_step_of)


def _remove_leftovers(ckpt_dir: Path) -> None:
    """Delete temporary files and tensor files without a JSON (writes cut short by a kill)."""
    for tmp in ckpt_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for tensors in ckpt_dir.glob("step_*.safetensors"):
        if not tensors.with_suffix(".json").exists():
            tensors.unlink(missing_ok=True)


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    meta: dict,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint `step` atomically (tensors, then the JSON commit marker) and keep only
    the newest `keep_last` checkpoints at or before `step`. Returns the JSON path.

    Raises CheckpointWriteError (an OSError) with one sentence if the disk refuses the write;
    the checkpoints already on disk are then left as they were."""
    ckpt_dir = Path(ckpt_dir)
    stem = f"step_{step:08d}"
    tensor_path = ckpt_dir / f"{stem}.safetensors"
    json_path = ckpt_dir / f"{stem}.json"
    payload = save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    record = {"format": FORMAT, "version": VERSION, "step": step, **meta}
    record["tensors_file"] = tensor_path.name
    record["sha256"] = hashlib.sha256(payload).hexdigest()
    record["meta_sha256"] = _meta_digest(record)
    text = json.dumps(record, indent=1).encode()
    tensors_written = False
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(ckpt_dir)
        if json_path.exists():
            # Re-saving a step (after falling back from a corrupt newer checkpoint): drop the
            # old marker first so that no JSON ever names tensors it was not written with.
            json_path.unlink()
            fsync_dir(ckpt_dir)
        atomic_write_bytes(tensor_path, payload)
        tensors_written = True
        atomic_write_bytes(json_path, text)
    except OSError as exc:
        if tensors_written:
            with contextlib.suppress(OSError):
                tensor_path.unlink(missing_ok=True)
        older = [p.name for p in list_checkpoints(ckpt_dir) if _step_of(p) < step]
        kept = (
            f"the previous checkpoint {older[-1]} is intact"
            if older
            else "there is no older checkpoint"
        )
        reason = exc.strerror or str(exc)
        raise CheckpointWriteError(
            exc.errno,
            f"cannot write checkpoint {str(json_path)!r} ({reason}); {kept}; free space or "
            f"fix the directory and continue with --resume.",
        ) from exc
    # Prune: keep the newest `keep_last` checkpoints up to this step. Newer files (left by a
    # corrupt checkpoint that resume skipped) are not counted; they are overwritten later.
    older = [p for p in list_checkpoints(ckpt_dir) if _step_of(p) <= step]
    for old in older[: max(len(older) - keep_last, 0)]:
        try:
            old.unlink(missing_ok=True)  # the marker first: a kill here leaves only an orphan
            old.with_suffix(".safetensors").unlink(missing_ok=True)
        except OSError as exc:  # the new checkpoint is committed; do not fail the run for this
            warnings.warn(f"could not remove old checkpoint {old} ({exc.strerror}).", stacklevel=2)
    return json_path


# ----------------------------------------------------------------------------- loading
def _resolve(path: Path) -> list[Path]:
    if path.is_dir():
        sub = path / "checkpoints"
        return list_checkpoints(sub if sub.is_dir() else path)
    if path.suffix == ".safetensors":
        return [path.with_suffix(".json")]
    return [path]


def load_checkpoint(
    path: str | Path, *, allow_pickle: bool = False
) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of a checkpoint JSON/safetensors file, or of the newest valid one in a
    run directory; a corrupt newer checkpoint is skipped with a warning naming its file.

    Pickled files (`.pt`, `.pth`, ...) are refused unless allow_pickle=True; see
    `load_pickle_checkpoint` for what is then accepted."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ValueError(
                f"{str(path)!r} looks like a pickle checkpoint; phasediff loads its own "
                f"safetensors + JSON checkpoints, and pickles only with --allow-pickle "
                f"(allow_pickle=True), read by torch.load(weights_only=True)."
            )
        if not path.is_file():
            raise ValueError(f"checkpoint file {str(path)!r} does not exist.")
        return load_pickle_checkpoint(path)
    if not path.exists():
        raise ValueError(f"checkpoint path {str(path)!r} does not exist.")
    candidates = _resolve(path)
    if not candidates:
        raise ValueError(
            f"no checkpoint (step_*.json) found under {str(path)!r}; pass a run directory "
            f"written by phasediff train or one of its checkpoint JSON files."
        )
    errors = []
    for json_path in reversed(candidates):
        try:
            return _load_one(json_path)
        except ValueError as exc:
            errors.append(str(exc))
            if len(candidates) > 1:
                warnings.warn(f"skipping checkpoint {json_path}: {exc}", stacklevel=2)
    if len(errors) == 1:
        raise ValueError(errors[0])
    raise ValueError(
        f"none of the {len(errors)} checkpoints under {str(path)!r} is valid "
        f"(newest: {errors[0].rstrip('.')})."
    )


def _sniff(path: Path) -> str:
    """A hint about what a non-JSON file is ("a pickle / torch.save file" or "")."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "; it looks like a torch.save/pickle file, which needs --allow-pickle and a .pt name"
    return ""


def _load_one(json_path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    name = str(json_path)
    if json_path.is_dir():
        raise ValueError(f"checkpoint path {name!r} is a directory without checkpoints.")
    try:
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"checkpoint JSON {name!r} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise ValueError(
            f"{name!r} is not a readable checkpoint JSON ({reason}{_sniff(json_path)})."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{name!r} is not a phasediff checkpoint (missing format tag).")
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
        raise ValueError(f"checkpoint JSON {name!r} is corrupt (its checksum does not match).")
    problems = _schema_problem(meta)
    if problems:
        raise ValueError(f"checkpoint JSON {name!r} is not a valid checkpoint ({problems}).")
    tensor_path = json_path.with_name(meta["tensors_file"])
    try:
        payload = tensor_path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"checkpoint tensors {str(tensor_path)!r} are missing.") from None
    except OSError as exc:
        raise ValueError(
            f"checkpoint tensors {str(tensor_path)!r} cannot be read ({exc.strerror})."
        ) from None
    if hashlib.sha256(payload).hexdigest() != meta["sha256"]:
        raise ValueError(
            f"checkpoint tensors {str(tensor_path)!r} are corrupt (checksum mismatch)."
        )
    try:
        tensors = load_safetensors_bytes(payload)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(
            f"checkpoint tensors {str(tensor_path)!r} cannot be read ({type(exc).__name__})."
        ) from None
    return meta, tensors


def _schema_problem(meta: dict) -> str:
    """'' if the keys every phasediff checkpoint carries are present and well typed."""
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "'step' must be an integer ≥ 0"
    if not isinstance(meta.get("config"), dict):
        return "'config' must be a table"
    tensors_file = meta.get("tensors_file")
    if not isinstance(tensors_file, str) or not _TENSORS_NAME.match(tensors_file):
        return "'tensors_file' must name a step_*.safetensors file beside it"
    if not isinstance(meta.get("sha256"), str):
        return "'sha256' must be a hex string"
    return ""


def load_pickle_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of a torch.save file, read with `torch.load(weights_only=True)` (no code
    runs: only tensors, dicts, lists, strings and numbers are unpickled).

    Accepted layout, a dict:
      {"config": <phasediff config as a dict, e.g. Config.model_dump()>,
       "model": <model.state_dict()>,
       "ema": <{parameter name: tensor}>          (optional),
       "step": <int>                              (optional),
       "process": <LinearProcess.describe()>      (optional; compared on load)}
    The tensors come back under the same `model.*` / `ema.*` keys as a safetensors checkpoint.
    """
    path = Path(path)
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(
            f"{name!r} cannot be loaded with torch.load(weights_only=True) "
            f"({_torch_load_reason(exc)}); only tensors, dicts, lists, strings and numbers "
            f"are accepted, never arbitrary objects."
        ) from None
    layout = (
        "{'config': dict, 'model': state dict, optional 'ema', 'step', 'process'} "
        "(see docs/reliability.md)"
    )
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
        raise ValueError(f"pickle checkpoint {name!r} must hold a dict {layout}.")
    tensors: dict[str, torch.Tensor] = {}
    for section in ("model", "ema"):
        part = obj.get(section, {} if section == "ema" else None)
        if not isinstance(part, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in part.items()
        ):
            raise ValueError(
                f"pickle checkpoint {name!r}: '{section}' must map names to tensors; "
                f"expected {layout}."
            )
        tensors.update({f"{section}.{k}": v for k, v in part.items()})
    step = obj.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"pickle checkpoint {name!r}: 'step' must be an integer ≥ 0.")
    meta: dict = {"format": PICKLE_FORMAT, "step": step, "config": obj["config"], "source": name}
    if isinstance(obj.get("process"), dict):
        meta["process"] = obj["process"]
    return meta, tensors


def _torch_load_reason(exc: Exception) -> str:
    """The informative line of a torch.load error (torch wraps it in generic advice)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found:
        reason = found.group(1).split(". ")[0]
    else:
        generic = ("Weights only load failed", "Please file", "Check the documentation", "(")
        lines = [line.strip() for line in text.splitlines()]
        useful = [line for line in lines if line and not line.startswith(generic)]
        reason = useful[0] if useful else type(exc).__name__
    return f"{type(exc).__name__}: {reason[:160].rstrip('.')}"


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Sub-dict of the tensors whose keys start with `prefix.` (prefix removed)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# ----------------------------------------------------------------------------- checks
def process_mismatch(saved: dict, current: dict, *, rtol: float = 1e-9) -> str | None:
    """First difference between two `LinearProcess.describe()` dicts, as a phrase such as
    "A[1][0] is 1 in the checkpoint but 2 now", or None when they agree.

    Numbers are compared with relative tolerance `rtol` (plus 1e-12 absolute), so a
    JSON round trip or another BLAS never counts as a change but a changed default does."""

    def walk(a, b, where: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key not in a or key not in b:
                    side = "the checkpoint" if key not in a else "the rebuilt process"
                    return f"{where}{'.' if where else ''}{key} is missing from {side}"
                found = walk(a[key], b[key], f"{where}{'.' if where else ''}{key}")
                if found:
                    return found
            return None
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return f"{where} has {len(a)} entries in the checkpoint but {len(b)} now"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                found = walk(x, y, f"{where}[{i}]")
                if found:
                    return found
            return None
        numbers = (int, float)
        if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
            x, y = float(a), float(b)
            if math.isclose(x, y, rel_tol=rtol, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y)):
                return None
            return f"{where} is {a:.6g} in the checkpoint but {b:.6g} now"
        if a != b:
            return f"{where} is {a!r} in the checkpoint but {b!r} now"
        return None

    # compare what JSON keeps: tuples become lists, keys become strings
    return walk(json.loads(json.dumps(saved)), json.loads(json.dumps(current)), "")


def state_dict_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """One phrase naming the first missing, unexpected or wrongly shaped tensor, or None."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            return f"tensor {key!r} is missing from the checkpoint"
        if tuple(state[key].shape) != tuple(value.shape):
            return (
                f"tensor {key!r} has shape {tuple(state[key].shape)} in the checkpoint but "
                f"{tuple(value.shape)} in the network built from its config"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        return f"the checkpoint has tensor {extra[0]!r}, which the network does not have"
    return None
