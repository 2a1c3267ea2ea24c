"""Designed processes from a config (docs/design-your-own-process.md): `preset = "recipe"`
with D, Q, S as k×k lists of rows, its one-sentence config errors (exit 2 at the CLI), PSLD
written as a recipe, the checkpoint round trip and `analyze mixing --process`."""

from __future__ import annotations

import functools
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasediff import processes as P
from phasediff.cli import app
from phasediff.processes import PRESETS, presets
from phasediff.training import build_process, load_config, load_trained

RECIPE = Path("configs/toy_recipe.toml")
TINY = [
    "train.steps=20",
    "train.batch_size=64",
    "train.log_every=10",
    "train.ckpt_every=20",
    "train.tensorboard=false",
    "data.n_train=2000",
    "model.hidden=32",
    "model.depth=2",
    "model.time_dim=16",
]


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def recipe_toml(path: Path, preset: str = "recipe", **params) -> Path:
    """configs/toy_recipe.toml with its [process] replaced (matrices written as TOML)."""
    text = RECIPE.read_text(encoding="utf-8")
    head, rest = text.split("[process]", 1)
    tail = rest[rest.index("[data]") :]
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in params.items())
    path.write_text(f'{head}[process]\npreset = "{preset}"\n\n[process.params]\n{body}\n\n{tail}')
    return path


def shipped_params() -> dict:
    return tomllib.loads(RECIPE.read_text(encoding="utf-8"))["process"]["params"]


I3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
NAN = math.nan

# (case, params replacing the shipped ones, field, words of the sentence)
BAD = [
    (
        "non-psd D",
        {"D": [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 3.0]]},
        "D",
        "D must be positive semi-definite, but its smallest eigenvalue is -1",
    ),
    (
        "asymmetric D",
        {"D": [[0.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]},
        "D",
        "D must be symmetric",
    ),
    (
        "non-skew Q",
        {"Q": [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]},
        "Q",
        "Q must be skew-symmetric, but max |Q + Qᵀ| = 2",
    ),
    (
        "S not positive definite",
        {"S": [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]},
        "S",
        "S must be symmetric positive definite",
    ),
    (
        "non-square D",
        {"D": [[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]]},
        "D",
        "D must be a square k×k matrix, got shape (2, 3)",
    ),
    (
        "ragged S",
        {"S": [[1.0, 0.0, 0.0], [0.0, 1.0], [0.0, 0.0, 1.0]]},
        "S",
        "S must be a square matrix of numbers",
    ),
    (
        "NaN in D",
        {"D": [[0.0, 0.0, 0.0], [0.0, NAN, 0.0], [0.0, 0.0, 3.0]]},
        "D",
        "D must be finite, but its entry [1][1] is nan",
    ),
    ("Inf in S", {"S": [[1.0, 0.0, 0.0], [0.0, math.inf, 0.0], I3[2]]}, "S", "entry [1][1] is inf"),
    (
        "k mismatch Q",
        {"Q": [[0.0, -1.0], [1.0, 0.0]]},
        "Q",
        "Q must be 3×3 like D, got 2×2",
    ),
    ("k mismatch S", {"S": [[1.0]]}, "S", "S must be 3×3 like D, got 1×1"),
    (
        "aux_init_cov size",
        {"aux_init": None, "aux_init_cov": I3},
        "aux_init_cov",
        "aux_init_cov must be 2×2",
    ),
    ("missing S", {"S": None}, "S", "preset 'recipe' needs S in process.params"),
    ("unknown parameter", {"gamma": 1.0}, "gamma", "it has no parameter 'gamma'"),
    (
        "beta and a linear schedule",
        {"beta_min": 0.1, "beta_max": 20.0},
        "beta",
        "give either beta (a constant time change) or beta_min and beta_max, not both",
    ),
    ("beta negative", {"beta": -1.0}, "beta", "beta must be a finite number > 0, got -1"),
    ("t_min ≥ T", {"t_min": 1.0}, "t_min", "need 0 ≤ t_min < T"),
    (
        "string entry",
        {"Q": [[0.0, "x", 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]},
        "Q",
        "'Q' must be a finite number, a list of finite numbers or a matrix",
    ),
]


def _params(changes: dict) -> dict:
    params = {**shipped_params(), **changes}
    return {k: v for k, v in params.items() if v is not None}


def _one_sentence(text: str, field: str, words: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text
    assert text.strip().endswith(".")
    state = "is missing" if "needs" in words else "is invalid"
    assert f"config field 'process.params.{field}' {state}: " in text
    assert words in text


@pytest.mark.parametrize("case, changes, field, words", BAD, ids=[b[0] for b in BAD])
def test_bad_matrix_is_one_sentence_naming_the_field(tmp_path, case, changes, field, words):
    path = recipe_toml(tmp_path / "bad.toml", **_params(changes))
    with pytest.raises(ValueError) as info:
        load_config(path)
    _one_sentence(str(info.value), field, words)


@pytest.mark.parametrize(
    "case",
    ["non-psd D", "non-skew Q", "non-square D", "NaN in D", "k mismatch Q", "missing S"],
)
def test_bad_matrix_exits_2_from_train_and_analyze_mixing(tmp_path, case):
    _, changes, field, words = next(b for b in BAD if b[0] == case)
    path = recipe_toml(tmp_path / "bad.toml", **_params(changes))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: config field")
    _one_sentence(res.output, field, words)
    assert not (tmp_path / "run" / "checkpoints").exists()
    res = runner.invoke(app, ["analyze", "mixing", "--process", str(path), "--out", "x.png"])
    assert res.exit_code == 2, res.output
    _one_sentence(res.output, field, words)


def test_a_coupling_matrix_for_langevin_chain_points_to_the_recipe():
    """langevin_chain takes k − 1 couplings (numbers), not a matrix: a matrix is refused with
    the pointer to the recipe's skew Q."""
    with pytest.raises(ValueError) as info:
        load_config(
            "configs/toy_hold.toml",
            [
                "process.preset='langevin_chain'",
                "process.params={k = 3, couplings = [[0.0, -1.0], [1.0, 0.0]]}",
            ],
        )
    _one_sentence(str(info.value), "couplings", "a full coupling matrix is the skew Q")
    cfg = load_config(
        "configs/toy_hold.toml",
        ["process.preset='langevin_chain'", "process.params={k = 3, couplings = [1.0, 2.0]}"],
    )
    assert build_process(cfg).k == 3


def test_recipe_params_reach_the_process():
    """Every accepted parameter of the recipe: matrices, constant or linear β, t_min, T and
    the auxiliaries' initial covariance (a matrix or a multiple of S[1:, 1:])."""
    cfg = load_config(RECIPE)
    p = build_process(cfg)
    params = shipped_params()
    for name in ("D", "Q", "S"):
        assert torch.equal(getattr(p, name), torch.tensor(params[name], dtype=torch.float64))
    assert p.describe()["schedule"] == {"kind": "constant", "beta": 4.0}
    assert torch.allclose(p.initial_cov[1:, 1:], 0.04 * torch.eye(2, dtype=torch.float64))
    assert (p.t_min, p.T, p.k, p.noisy_blocks) == (1e-3, 1.0, 3, (1, 2))
    two = {
        "D": [[0.0, 0.0], [0.0, 1.0]],
        "Q": [[0.0, -1.0], [1.0, 0.0]],
        "S": [[1.0, 0.0], [0.0, 0.25]],
        "beta_min": 0.5,
        "beta_max": 6.0,
        "aux_init_cov": [[0.02]],
        "t_min": 1e-4,
        "T": 2.0,
    }
    p2 = P.get_process("recipe", **two)
    assert p2.describe()["schedule"] == {"kind": "linear", "beta_min": 0.5, "beta_max": 6.0}
    assert float(p2.beta(torch.tensor(2.0))) == pytest.approx(6.0)  # β_max reached at T
    assert p2.initial_cov.tolist() == [[0.0, 0.0], [0.0, 0.02]]
    assert (p2.t_min, p2.T) == (1e-4, 2.0)


def test_toy_recipe_is_a_critically_damped_third_order_process():
    """configs/toy_recipe.toml: A = −(D + Q) has the triple eigenvalue −2 (like HOLD), the
    friction sits on v and a (unequal, so the x↔a coupling cannot be rotated into a chain),
    x is coupled to both, and N(0, I) is stationary."""
    p = build_process(load_config(RECIPE))
    eye = torch.eye(3, dtype=torch.float64)
    assert float(torch.linalg.matrix_power(p.A + 2 * eye, 3).abs().max()) < 1e-12
    assert float(torch.trace(p.A)) == pytest.approx(-6.0, abs=1e-12)
    assert torch.equal(p.D, torch.diag(torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)))
    assert float(p.Q[2, 0]) == pytest.approx(math.sqrt(2), abs=1e-15)
    assert p.stationary_check() < 1e-12
    hold = P.hold()
    assert p.spectral_gap() == pytest.approx(hold.spectral_gap(), abs=1e-4)


# ------------------------------------------------------------------ PSLD as a recipe


def psld_as_recipe(Gamma=0.01, nu=4.01, M=0.25, kappa=0.04, beta=8.0) -> dict:
    """PSLD's (Γ, ν, M, κ, β) → the recipe's params, as docs/design-your-own-process.md writes
    them: D = ½diag(Γ, Mν), Q = ½[[0, −1], [1, 0]], S = diag(1, M), aux_init = κ."""
    return {
        "D": [[0.5 * Gamma, 0.0], [0.0, 0.5 * M * nu]],
        "Q": [[0.0, -0.5], [0.5, 0.0]],
        "S": [[1.0, 0.0], [0.0, M]],
        "beta": beta,
        "aux_init": kappa,
        "t_min": 1e-5,
    }


def _assert_same_process(a: P.LinearProcess, b: P.LinearProcess, tol: float = 1e-12) -> None:
    for name in ("A", "D", "Q", "S", "initial_cov", "prior_cov"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=0, atol=tol), name
    assert a.describe()["schedule"] == b.describe()["schedule"]
    assert (a.t_min, a.T, a.noise_damping) == (b.t_min, b.T, b.noise_damping)
    t = torch.tensor([a.t_min, 1e-3, 0.05, 0.3, 1.0], dtype=torch.float64)
    for s in (None, torch.full_like(t, a.t_min)):
        (E1, N1), (E2, N2) = a.kernel(t, s), b.kernel(t, s)
        assert torch.allclose(E1, E2, rtol=0, atol=tol)
        assert torch.allclose(N1, N2, rtol=1e-12, atol=1e-15)


def test_psld_written_as_a_recipe_is_the_psld_preset():
    _assert_same_process(P.get_process("recipe", **psld_as_recipe()), P.psld())
    other = {"Gamma": 0.25, "nu": 3.0, "M": 0.5, "kappa": 0.1, "beta": 5.0}
    _assert_same_process(P.get_process("recipe", **psld_as_recipe(**other)), P.psld(**other))


def test_the_tutorial_psld_config_is_the_psld_preset(tmp_path):
    """The TOML block of docs/design-your-own-process.md builds the psld preset to 1e-12."""
    text = Path("docs/design-your-own-process.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    (block,) = [b for b in blocks if b.startswith("# psld_recipe.toml")]
    path = tmp_path / "psld_recipe.toml"
    path.write_text(block, encoding="utf-8")
    _assert_same_process(build_process(load_config(path)), P.psld())


# ------------------------------------------------------------------ round trip


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe_run")
    res = CliRunner().invoke(
        app,
        ["train", str(RECIPE), "--out", str(path), "--no-progress", *(f"--set={o}" for o in TINY)],
    )
    assert res.exit_code == 0, res.output
    return path


def test_a_recipe_run_reloads_with_its_matrices(recipe_run):
    """load_trained rebuilds the process from the stored config; `phasediff sample RUN` with
    lie_trotter, strang, ei1c and em on such a run is in the tutorial test below."""
    model, process, config, _ = load_trained(recipe_run)
    assert config.process.preset == "recipe"
    _assert_same_process(process, build_process(load_config(RECIPE)), tol=0.0)
    stored = json.loads((recipe_run / "config.json").read_text())["process"]["params"]
    assert stored["Q"] == shipped_params()["Q"]


def test_a_changed_recipe_is_refused_on_load(recipe_run, monkeypatch):
    """The stored matrices are compared with the rebuilt process, as for the presets."""

    def changed(*args, **kwargs):
        return presets.recipe(*args, **{**kwargs, "beta": 5.0})

    monkeypatch.setitem(PRESETS, "recipe", functools.update_wrapper(changed, presets.recipe))
    with pytest.raises(ValueError, match=r"different process than preset 'recipe' builds now"):
        load_trained(recipe_run)
    res = CliRunner().invoke(app, ["sample", str(recipe_run), "--num", "8", "--steps", "2"])
    assert res.exit_code == 2 and "schedule.beta is 4 in the checkpoint but 5 now" in res.output


# ------------------------------------------------------------------ analyze mixing


def test_analyze_mixing_prints_a_config_row_next_to_the_presets(tmp_path):
    out, js = tmp_path / "mix.png", tmp_path / "mix.json"
    args = ["analyze", "mixing", "--preset", "cld", "--preset", "hold", "--process", str(RECIPE)]
    args += ["--process", "configs/toy_cld.toml", "--out", str(out), "--json", str(js)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("| ")]
    names = ["cld", "hold", "toy_recipe", "toy_cld"]
    assert [line.split("|")[1].strip() for line in lines[1:]] == names
    assert out.stat().st_size > 10_000
    rows = {r["name"]: r for r in json.loads(js.read_text())}
    assert list(rows) == names
    ours, hold = rows["toy_recipe"], rows["hold"]
    assert ours["gap_per_beta"] == pytest.approx(2.0, abs=1e-4)
    assert ours["budget_rate"] == pytest.approx(6.0, abs=1e-12)
    # the designed process reaches KL < 1e-3 with ~25 % less budget than HOLD (tutorial)
    assert ours["budget_to_eps_gauss"] == pytest.approx(11.6, abs=0.05)
    assert ours["budget_to_eps_gauss"] < 0.8 * hold["budget_to_eps_gauss"]
    # a preset's own config gives the preset's row
    assert {**rows["toy_cld"], "name": "cld"} == rows["cld"]


def test_analyze_mixing_refuses_unknown_presets_and_missing_configs(tmp_path):
    res = CliRunner().invoke(app, ["analyze", "mixing", "--preset", "hold3"])
    assert res.exit_code == 2 and "valid presets are: vp, subvp, ve, cld" in res.output
    res = CliRunner().invoke(app, ["analyze", "mixing", "--process", str(tmp_path / "no.toml")])
    assert res.exit_code == 2 and "does not exist" in res.output


# ------------------------------------------------------------------ the tutorial


def _shortened(args: list[str]) -> list[str]:
    """A tutorial command at a test's size: 20 tiny training steps, 4 sampler steps, 64
    samples."""
    out = list(args)
    for flag, value in (("--steps", "4"), ("--num", "64")):
        if flag in out:
            out[out.index(flag) + 1] = value
    if out[0] == "train":
        out += [f"--set={o}" for o in TINY] + ["--no-progress"]
    return out


def test_the_tutorial_commands_run_shortened(tmp_path, monkeypatch):
    """Every `phasediff …` line and Python block of docs/design-your-own-process.md, in order,
    in a fresh directory holding the tutorial's psld_recipe.toml and the repository's configs/
    (training shortened to 20 steps, sampling to 4 steps and 64 samples)."""
    root = Path.cwd()
    text = (root / "docs" / "design-your-own-process.md").read_text(encoding="utf-8")
    (psld,) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.DOTALL) if "psld" in b]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(root / "configs")
    (tmp_path / "psld_recipe.toml").write_text(psld, encoding="utf-8")
    commands = [
        line.split()[1:]
        for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
        if line.startswith("phasediff ")
    ]
    assert [c[0] for c in commands] == ["analyze", "analyze", "train", *["sample"] * 4, "eval"]
    for args in commands:
        res = CliRunner().invoke(app, _shortened(args))
        assert res.exit_code == 0, (args, res.output)
    # the run trained from configs/toy_recipe.toml sampled with lie_trotter, strang, ei1c, em
    run = tmp_path / "runs" / "toy_recipe"
    for sampler in ("lie_trotter", "strang", "ei1c", "em"):
        data = np.load(run / f"{sampler}.npz")
        assert data["x"].shape == (64, 2) and np.isfinite(data["x"]).all()
        assert int(data["nfe"]) == 4, sampler
    assert (run / "eval" / "metrics.json").is_file()
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        code = block.replace("steps=100", "steps=12").replace("sampler_steps=50", "sampler_steps=4")
        exec(compile(code, "design-your-own-process.md", "exec"), {})
    assert (tmp_path / "recipe_phases.png").stat().st_size > 10_000
