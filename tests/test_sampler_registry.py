"""The sampler registry (phasediff/samplers/registry.py): one entry per sampler, read by the
CLI help and defaults, the benchmark lists, inpainting and the steps ↔ NFE conversion."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasediff import bench
from phasediff import processes as P
from phasediff.cli import app
from phasediff.samplers import GRIDS, REGISTRY, SAMPLERS, exponential_integrator, get_sampler
from phasediff.samplers.conditional import INPAINT_SAMPLERS, inpaint
from phasediff.samplers.grids import FEW_STEPS, optimal_grid, time_grid
from phasediff.samplers.registry import (
    SCORE,
    VELOCITY,
    get_entry,
    nfe_for_steps,
    resolve,
    sampler_names,
    steps_for_nfe,
)
from phasediff.training import Trainer, load_config, load_trained
from tests.gaussian import ExactGaussianScore
from tests.test_hgf import GMM_MEANS, GMM_STD, ExactVelocity

ALL = (
    "em",
    "euler",
    "heun",
    "dopri5",
    "lie_trotter",
    "strang",
    "pc",
    "ei",
    "ei1",
    "ei3",
    "eic",
    "ei1c",
    "hgf_euler",
    "hgf_heun",
    "hgf_dopri5",
    "hgf_ei",
)
DEFAULT_GRID = {name: "uniform" for name in ALL} | {
    "ei": "auto",  # logb up to 15 steps, optimal above
    "ei1": "auto",  # logb up to 15 steps, optimal above
    "ei3": "auto",  # logb up to 15 steps, optimal above
    "eic": "auto",  # logb up to 15 steps, optimal above
    "ei1c": "auto",  # logb up to 15 steps, optimal above
    "hgf_ei": "quadratic",
    "lie_trotter": "quadratic",  # fine steps near t_min: docs/samplers.md, "Default grids"
    "strang": "quadratic",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "configs/toy_hold.toml",
        ["train.steps=20", "train.tensorboard=false", "data.n_train=2000", "train.batch_size=64"],
    )
    Trainer(cfg, path, progress=False).fit()
    return path


def _flat(text: str) -> str:
    """Help text without rich's box characters and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_sampler_has_one_entry_and_samplers_derive_from_it():
    assert tuple(REGISTRY) == ALL == tuple(SAMPLERS)
    for name, entry in REGISTRY.items():
        assert entry.name == name and entry.description.endswith(".")
        assert entry.default_grid == DEFAULT_GRID[name] in GRIDS
        assert entry.default_grid == inspect.signature(entry.function).parameters["grid"].default
        assert get_sampler(name) is SAMPLERS[name]
    # plain functions stay themselves, behind the final-step keywords (samplers/final.py)
    assert SAMPLERS["em"].__wrapped__ is REGISTRY["em"].function
    assert "final" in inspect.signature(SAMPLERS["em"]).parameters
    assert REGISTRY["ei1"].options == {"order": 1}
    assert REGISTRY["eic"].options == {"order": 2, "corrector": True}
    assert sampler_names(SCORE) == ALL[:12] and sampler_names(VELOCITY) == ALL[12:]
    assert sampler_names(adaptive=True) == ("dopri5", "hgf_dopri5")
    assert GRIDS == ("uniform", "quadratic", "edm", "logb", "optimal", "auto")


def test_bench_and_inpainting_lists_come_from_the_registry():
    assert bench.SCORE_SAMPLERS == ALL[:12] and bench.VELOCITY_SAMPLERS == ALL[12:]
    assert bench.ADAPTIVE_SAMPLERS == ("dopri5", "hgf_dopri5")
    assert set(INPAINT_SAMPLERS) == {"em", "euler", "heun", "pc", "lie_trotter", "strang"} | {
        "ei",
        "ei1",
        "ei3",
    }
    assert all(REGISTRY[n].inpaint for n in INPAINT_SAMPLERS)
    for budget in range(1, 12):
        for name in ("em", "heun", "pc", "ei", "hgf_heun", "hgf_ei"):
            assert bench.steps_for_nfe(name, budget) == steps_for_nfe(name, budget)


def test_unknown_sampler_lists_every_valid_name():
    message = f"unknown sampler 'ddim'; valid samplers are: {', '.join(ALL)}."
    with pytest.raises(ValueError) as info:
        get_sampler("ddim")
    assert str(info.value) == message
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        nfe_for_steps("ddim", 3)


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_nfe_of_every_fixed_step_sampler_matches_the_measured_nfe(steps):
    """Heun (PF-ODE and HGF) and pc: 2·steps − 1 (Euler last step, no last correction);
    every other fixed-step sampler 1 per step; adaptive ones have none."""
    score_model, vp = ExactGaussianScore(P.vp(), 0.25), P.vp()
    ohgf = P.ohgf(1.0, 1.0)
    velocity_model = ExactVelocity(ohgf, GMM_MEANS, GMM_STD)
    expected = {"heun": 2 * steps - 1, "hgf_heun": 2 * steps - 1, "pc": 2 * steps - 1}
    for name in sampler_names(adaptive=False):
        velocity = VELOCITY in REGISTRY[name].kinds
        model, process = (velocity_model, ohgf) if velocity else (score_model, vp)
        out = SAMPLERS[name](model, process, (4, 2), steps, generator=torch.Generator())
        assert out.nfe == nfe_for_steps(name, steps) == expected.get(name, steps), name
    assert nfe_for_steps("dopri5", steps) is None and nfe_for_steps("hgf_dopri5", steps) is None


def test_steps_for_nfe_is_the_most_steps_within_the_budget():
    assert [steps_for_nfe("heun", n) for n in (1, 2, 3, 4, 5, 8, 64)] == [1, 1, 2, 2, 3, 4, 32]
    assert [steps_for_nfe("ei", n) for n in (1, 4, 64)] == [1, 4, 64]
    for name in sampler_names(adaptive=False):
        for budget in range(1, 20):
            steps = steps_for_nfe(name, budget)
            assert nfe_for_steps(name, steps) <= budget or steps == 1
            assert nfe_for_steps(name, steps + 1) > budget
    with pytest.raises(ValueError, match="'dopri5' is adaptive and chooses its own steps"):
        steps_for_nfe("dopri5", 10)


def test_velocity_models_are_routed_by_the_registry():
    process = P.ohgf(1.0, 1.0)
    velocity_model = ExactVelocity(process, GMM_MEANS, GMM_STD)
    score_model = ExactGaussianScore(P.vp(), 0.25)
    assert resolve("ei", velocity_model).name == "hgf_ei"
    assert resolve("ei1", velocity_model).default_grid == "quadratic"
    assert resolve("ei", score_model).name == "ei"
    # ei on a velocity model is hgf_ei on its own (quadratic) grid, the order carried over
    for name, order in (("ei", 2), ("ei1", 1), ("ei3", 3)):
        a = SAMPLERS[name](velocity_model, process, (16, 2), 5, generator=torch.Generator())
        b = SAMPLERS["hgf_ei"](
            velocity_model, process, (16, 2), 5, order=order, generator=torch.Generator()
        )
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
        torch.testing.assert_close(a.times, time_grid(process, 5, "quadratic"))
    # exponential_integrator itself no longer reroutes: one clear sentence
    with pytest.raises(ValueError, match="samples score and ε models; sample a velocity model"):
        exponential_integrator(velocity_model, process, (4, 2), 3)
    velocity_names = "ei, ei1, ei3, hgf_euler, hgf_heun, hgf_dopri5, hgf_ei"
    with pytest.raises(ValueError) as info:
        get_sampler("em", velocity_model)
    assert str(info.value) == (
        f"sampler 'em' does not sample velocity models; for this model use one of: "
        f"{velocity_names}."
    )
    with pytest.raises(ValueError, match="sampler 'eic' does not sample velocity models"):
        resolve("eic", velocity_model)
    with pytest.raises(ValueError, match="'hgf_euler' does not sample score models; .*: em, "):
        resolve("hgf_euler", score_model)


def test_inpainting_refuses_samplers_the_registry_marks_unfit():
    process = P.vp()
    model = ExactGaussianScore(process, 0.25)
    known, mask = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)
    mask[:, 0] = True
    with pytest.raises(ValueError) as info:
        inpaint(model, process, known, mask, 3, sampler="dopri5")
    assert f"one of {', '.join(INPAINT_SAMPLERS)}, got 'dopri5'." in str(info.value)
    ohgf = P.ohgf(1.0, 1.0)
    with pytest.raises(ValueError, match="got 'ei'"):  # routed to hgf_ei: position-only state
        inpaint(
            ExactVelocity(ohgf, GMM_MEANS, GMM_STD),
            ohgf,
            known[:, :2],
            mask[:, :2],
            3,
            sampler="ei",
        )


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_help_lists_every_sampler_with_its_default_grid_and_every_grid(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    text = _flat(res.output)
    for name in ALL:
        assert f"{name} ({DEFAULT_GRID[name]})" in text, name
    assert "Time grid: uniform, quadratic, edm, logb, optimal, auto." in text
    assert "Default: the sampler's own" in text


@pytest.mark.parametrize(("steps", "resolved"), [(6, "logb"), (16, "optimal")])
def test_sample_ei_without_grid_uses_auto_and_equals_the_python_call(
    run_dir, tmp_path, steps, resolved
):
    out = tmp_path / "ei.npz"
    args = ["sample", str(run_dir), "--sampler", "ei", "--steps", str(steps), "--num", "64"]
    # the integrator itself (the default jump: test_final_step; the x̂₀ guard: test_x0_guard)
    args += ["--final", "integrate", "--no-x0-guard"]
    res = CliRunner().invoke(app, [*args, "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["grid"] == "auto"
    saved = np.load(out)
    model, process, _, _ = load_trained(run_dir, ema=True)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = exponential_integrator(model, process, (64, 2), steps, grid=resolved, generator=gen())
    # "auto" is logb up to 15 steps and the order-2 optimal grid above (grids.FEW_STEPS)
    want = (
        time_grid(process, steps, resolved) if resolved == "logb" else optimal_grid(process, steps)
    )
    np.testing.assert_allclose(saved["times"], want.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(saved["x"], ref.x.numpy(), rtol=1e-6, atol=1e-6)
    assert int(saved["nfe"]) == ref.nfe == steps
    # the old CLI behaviour (uniform) gives other samples: the default grid matters here
    uniform = exponential_integrator(
        model, process, (64, 2), steps, grid="uniform", generator=gen()
    )
    assert not np.allclose(saved["x"], uniform.x.numpy(), atol=1e-3)


def test_auto_grid_switches_at_few_steps():
    process = P.hold()
    for steps in (1, 10, FEW_STEPS):
        torch.testing.assert_close(
            time_grid(process, steps, "auto"), time_grid(process, steps, "logb"), rtol=0, atol=0
        )
    for steps in (FEW_STEPS + 1, 50):
        torch.testing.assert_close(
            time_grid(process, steps, "auto"), optimal_grid(process, steps), rtol=0, atol=0
        )


def test_sample_refuses_a_sampler_for_another_model_kind(run_dir, tmp_path):
    res = CliRunner().invoke(
        app, ["sample", str(run_dir), "--sampler", "hgf_ei", "--out", str(tmp_path / "a.npz")]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "sampler 'hgf_ei' does not sample score models; for this model use one of: em," in (
        _flat(res.output)
    )


def _sampler_imports(path: Path) -> set[str]:
    """phasediff.samplers modules that `path` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("phasediff.samplers"):
                module = name.removeprefix("phasediff.samplers").lstrip(".") or "__init__"
                if (path.parent / f"{module}.py").exists():
                    found.add(module)
    return found - {path.stem}


def test_samplers_have_no_import_cycle():
    root = Path(__file__).resolve().parents[1] / "phasediff" / "samplers"
    graph = {p.stem: _sampler_imports(p) for p in root.glob("*.py")}
    assert "exponential" not in graph["base"] and "exponential" not in graph["grids"]
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' → '.join((*path, node))}"
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, (*path, node))
        done.add(node)

    for module in graph:
        visit(module, ())
    assert get_entry("ei").velocity_route == "hgf_ei"
