"""`phasediff bench`: the quality-vs-NFE harness on tiny budgets (the package phasediff/bench/),
the marker blocks in docs/benchmarks.md and their survival through `make bench`
(bench/run.py main)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phasediff import bench as B
from phasediff.bench import render, trained
from phasediff.cli import app

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """run_suite(threads=1) sets torch's global thread count (one thread: tiny networks, and
    no OpenMP oversubscription on a loaded machine); give the other test files theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run_toy(tmp: Path, **kw):
    """VP (pc included) and HOLD (pc refused): 30 training steps, NFE {5, 10}, 200 samples,
    every score sampler but ei1/ei3 (the same code as ei). Quality is irrelevant; the
    bookkeeping is what is tested."""
    args = dict(
        runs=tmp / "runs",
        steps=30,
        models="vp,hold",
        nfe="5,10",
        num=200,
        samplers="em,euler,heun,dopri5,lie_trotter,strang,pc,ei,hgf_euler,hgf_heun,hgf_dopri5",
        dopri_tol=1e-3,
        docs=tmp / "docs" / "benchmarks.md",
        img_dir=tmp / "docs" / "img",
        threads=1,
        progress=False,
    )
    args.update(kw)
    return B.run_suite("toy", **args)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    docs = tmp / "docs" / "benchmarks.md"
    docs.parent.mkdir(parents=True)
    docs.write_text("# Benchmarks\n\nHand-written intro.\n")
    return tmp, _run_toy(tmp)


def _expected_nfe(sampler: str, target: int) -> int:
    # Heun-type samplers (heun, pc) make 2·steps − 1 calls; 1 call per step otherwise
    if sampler in ("heun", "pc", "hgf_heun"):
        return 2 * ((target + 1) // 2) - 1
    return target


def test_toy_grid_covers_every_applicable_pair_with_measured_nfe(toy) -> None:
    _, results = toy
    cells = {(c["model"], c["sampler"], c["nfe_target"]): c for c in results["cells"]}
    fixed = ("em", "euler", "heun", "lie_trotter", "strang", "ei")
    expected = {("vp", s, n) for s in (*fixed, "pc") for n in (5, 10)}
    expected |= {("hold", s, n) for s in fixed for n in (5, 10)}
    expected |= {("vp", "dopri5", None), ("hold", "dopri5", None)}
    assert set(cells) == expected
    assert [(s["model"], s["sampler"]) for s in results["skipped"]] == [("hold", "pc")]
    for (_, sampler, target), cell in cells.items():
        if target is None:  # adaptive: its own NFE, more than a handful of steps
            assert cell["nfe"] > 12
        else:
            assert cell["nfe"] == _expected_nfe(sampler, target), cell
    assert {m: info["trained_steps"] for m, info in results["models"].items()} == {
        "vp": 30,
        "hold": 30,
    }


def test_toy_ratios_are_value_over_one_shared_floor_and_separate_bad_samples(toy) -> None:
    _, results = toy
    floors = results["floors"]
    for cell in results["cells"]:
        assert cell["error"] is None, cell
        for key in ("sliced_w2", "mode_sliced_w2", "mode_tvd"):
            entry = cell["metrics"][key]
            # one held-out triple (seed, seed+1, seed+2) for every cell: the same floor
            assert entry["floor"] == pytest.approx(floors[key], rel=1e-12)
            assert entry["ratio"] == pytest.approx(entry["value"] / entry["floor"], rel=1e-12)
    # fresh data sets scored like samples (an exact sampler) sit near 1: SW2 ratios of
    # two independent 200-point samples fluctuate by tens of percent, not by 3×
    for ref in results["exact_reference"]:
        assert 0.3 < ref["sliced_w2"] < 3.0 and 0.3 < ref["mode_sliced_w2"] < 3.0
    # 30 training steps cannot fit the rolls: every cell is far above the floor band
    worst_exact = max(r["mode_sliced_w2"] for r in results["exact_reference"])
    best_model = min(c["metrics"]["mode_sliced_w2"]["ratio"] for c in results["cells"])
    assert best_model > 3 * worst_exact


def test_toy_writes_block_plot_and_json(toy) -> None:
    tmp, results = toy
    docs = tmp / "docs" / "benchmarks.md"
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written intro.\n")  # outside untouched
    assert text.count("<!-- bench:toy -->") == 1 and text.count("<!-- /bench:toy -->") == 1
    block = B.extract_blocks(text)["toy"]
    assert "| process | sampler | NFE 5 | NFE 10 | adaptive |" in block
    vp_em = results["cells"][0]
    assert (vp_em["model"], vp_em["sampler"], vp_em["nfe_target"]) == ("vp", "em", 5)
    ratio = vp_em["metrics"]["mode_sliced_w2"]["ratio"]
    assert f"| VP | em | {render.fmt_ratio(ratio)} (5) |" in block
    assert "pc on HOLD" in block
    assert results["command"] in block and "--steps 30" in results["command"]
    assert "--dopri-tol 0.001" in results["command"] and "rtol = atol = 0.001" in block
    assert "![quality vs NFE, toy](img/bench_toy.png)" in block
    image = tmp / "docs" / "img" / "bench_toy.png"
    assert image.read_bytes()[:8] == PNG_MAGIC
    stored = json.loads((tmp / "runs" / "toy.json").read_text())
    assert stored["cells"] == results["cells"] and stored["settings"]["steps"] == 30


def test_render_only_keeps_notes_and_rerun_reuses_runs_and_cells(toy) -> None:
    tmp, results = toy
    docs = tmp / "docs" / "benchmarks.md"
    text = docs.read_text()
    notes = "<!-- notes:toy -->\nHOLD wins here.\n<!-- /notes:toy -->"
    text = text.replace("<!-- notes:toy -->\n<!-- /notes:toy -->", notes)
    docs.write_text(text + "\nA later section.\n")
    B.run_suite("toy", runs=tmp / "runs", docs=docs, img_dir=tmp / "docs" / "img", render_only=True)
    after = docs.read_text()
    assert after == text + "\nA later section.\n"  # same table, notes and trailer kept
    # a second full invocation finds the trained runs and every cell in the JSON
    again = _run_toy(tmp)
    assert all(info["reused"] for info in again["models"].values())
    assert again["cells"] == results["cells"]
    assert "HOLD wins here." in docs.read_text()


def test_another_seed_trains_its_own_runs_and_keeps_the_old_results(tmp_path: Path) -> None:
    first = _run_toy(tmp_path, models="vp", samplers="em", nfe="3")
    second = _run_toy(tmp_path, models="vp", samplers="em", nfe="3", seed=1)
    assert first["models"]["vp"]["run_dir"].endswith("vp_30")
    assert second["models"]["vp"]["run_dir"].endswith("vp_30_seed1")
    assert not second["models"]["vp"]["reused"]
    previous = json.loads((tmp_path / "runs" / "toy.previous.json").read_text())
    assert previous["settings"]["seed"] == 0 and previous["cells"] == first["cells"]
    value = [r["cells"][0]["metrics"]["sliced_w2"]["value"] for r in (first, second)]
    assert value[0] != value[1]  # another network, other samples


def test_reusing_a_run_trained_with_another_config_is_refused(tmp_path: Path) -> None:
    _run_toy(tmp_path, models="vp", samplers="em", nfe="3")
    spec = B.SUITE_MODELS["toy"][0]
    config = trained.suite_config(spec, "toy", 30, 0, 0)
    changed = config.model_copy(update={"train": config.train.model_copy(update={"lr": 1e-4})})
    run_dir = tmp_path / "runs" / "toy" / "vp_30"
    with pytest.raises(ValueError, match="was trained with another config"):
        trained.prepare_model(spec, changed, run_dir, progress=False)
    trained.prepare_model(spec, config, run_dir, progress=False)  # the same config is reused


def test_velocity_models_get_the_hgf_samplers(tmp_path: Path) -> None:
    res = _run_toy(tmp_path, models="ohgf", nfe="4")
    pairs = {(c["sampler"], c["nfe_target"]): c["nfe"] for c in res["cells"]}
    assert set(pairs) == {("hgf_euler", 4), ("hgf_heun", 4), ("hgf_dopri5", None)}
    assert pairs[("hgf_euler", 4)] == 4 and pairs[("hgf_heun", 4)] == 3
    assert res["models"]["ohgf"]["velocity"] is True


def test_digits_suite_reports_the_digits_fd_ratio(tmp_path: Path, monkeypatch) -> None:
    # a fresh classifier cache: the digits classifier is trained here (≈ 2 s on idle cores)
    monkeypatch.setenv("PHASEDIFF_CACHE", str(tmp_path / "cache"))
    res = B.run_suite(
        "digits",
        runs=tmp_path / "runs",
        steps=3,
        models="vp",
        samplers="em",
        nfe="2",
        num=150,
        docs=tmp_path / "b.md",
        img_dir=tmp_path / "img",
        threads=1,
        progress=False,
    )
    (cell,) = res["cells"]
    fd = cell["metrics"]["digits_fd"]
    assert fd["ratio"] == pytest.approx(fd["value"] / fd["floor"])
    # real training digits score near the floor (docs/evaluation.md: 0.8–1.0 at this size);
    # a 3-step U-Net's samples are noise, far above it (uniform noise scores ≈ 45)
    assert all(0.4 < r["digits_fd"] < 1.6 for r in res["exact_reference"])
    assert fd["ratio"] > 5
    assert "| VP | em |" in (tmp_path / "b.md").read_text()


def test_mixing_suite_wraps_the_mixing_table(tmp_path: Path) -> None:
    from phasediff.analysis.mixing import mixing_table
    from phasediff.processes import get_process

    res = B.run_suite(
        "mixing", runs=tmp_path, docs=tmp_path / "b.md", img_dir=tmp_path / "img", threads=0
    )
    names = [r["name"] for r in res["rows"]]
    assert names[:6] == ["vp", "subvp", "ve", "cld", "psld", "hold"]
    (hold,) = mixing_table([get_process("hold")])  # the same numbers, computed again
    stored = res["rows"][names.index("hold")]
    for key, value in hold.as_dict().items():
        assert stored[key] == (pytest.approx(value) if isinstance(value, float) else value)
    hamiltonian = res["rows"][names.index("hamiltonian")]  # D = 0: no budget, NaN in JSON
    assert hamiltonian["budget_rate"] == 0 and hamiltonian["budget_to_eps_gauss"] == "nan"
    block = B.extract_blocks((tmp_path / "b.md").read_text())["mixing"]
    assert "| hold | 3 |" in block and "img/bench_mixing.png" in block
    assert (tmp_path / "img" / "bench_mixing.png").read_bytes()[:8] == PNG_MAGIC
    # re-rendered from the JSON alone, the block is identical
    before = (tmp_path / "b.md").read_text()
    B.run_suite(
        "mixing", runs=tmp_path, docs=tmp_path / "b.md", img_dir=tmp_path / "img", render_only=True
    )
    assert (tmp_path / "b.md").read_text() == before


def test_overhead_table_formats_rows() -> None:
    rows = [
        {
            "sampler": "em",
            "process": "hold",
            "nfe": 20,
            "network_seconds": 0.25,
            "total_seconds": 0.26,
            "overhead": 0.04,
            "cold_extra_seconds": 0.001,
        }
    ]
    lines = B.format_overhead_table(rows)
    assert lines[2] == "| em | hold | 20 | 0.250 | 4.0 % | 0.001 |"


def test_every_suite_is_one_registered_suite_object() -> None:
    """The CLI's suites, the docs blocks and the result files all come from the registry."""
    assert B.SUITES == ("toy", "digits", "mixing", "samplers-overhead", "mild")
    for name in B.SUITES:
        suite = B.get_suite(name)
        assert isinstance(suite, B.Suite) and suite.name == name and B.REGISTRY[name] is suite
    assert set(B.get_suite("toy").arguments) >= {"steps", "nfe", "num", "seed", "dopri_tol"}
    assert B.get_suite("mixing").arguments == {} and B.SUITE_MODELS["toy"][0].key == "vp"
    with pytest.raises(ValueError, match="valid suites are: toy, digits, mixing, samplers-"):
        B.get_suite("nope")


def test_fast_sampling_script_writes_its_block_through_the_package(tmp_path: Path) -> None:
    """bench/fast_sampling.py renders its stored rows and replaces only its own block."""
    spec = importlib.util.spec_from_file_location("fast", REPO / "bench" / "fast_sampling.py")
    fast = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fast)
    rows = [["runs/toy_x", s, n, 2.0, 3.0] for s in fast.SAMPLER_NAMES for n in fast.NFES]
    rows.append(["runs/toy_x", "em", 1000, 1.1, 1.2])
    out = tmp_path / "b.md"
    out.write_text(
        "head\n\n<!-- bench:fast-sampling -->\nSTALE\n<!-- /bench:fast-sampling -->\ntail\n"
    )
    B.write_block(out, "fast-sampling", fast.render(rows))
    text = out.read_text()
    assert text.startswith("head\n\n<!-- bench:fast-sampling -->\n## Quality vs NFE")
    assert text.endswith("<!-- /bench:fast-sampling -->\ntail\n") and "STALE" not in text
    assert "**toy_x** — reference em, 1000 NFE: 1.10 / 1.20" in text
    assert "| ei1c | 2.00 / 3.00 | 2.00 / 3.00 | 2.00 / 3.00 | 2.00 / 3.00 |" in text


# ---------------------------------------------------------------------------- marker blocks


def test_keep_bench_blocks_reappends_only_missing_blocks() -> None:
    old = (
        "# Old\n\nstale\n\n<!-- bench:toy -->\nT1\n<!-- /bench:toy -->\n\n"
        "<!-- bench:digits -->\nD1\n<!-- notes:digits -->n<!-- /notes:digits -->\n"
        "<!-- /bench:digits -->\n"
    )
    fresh = "# New\n\nfresh tables\n"
    out = B.keep_bench_blocks(old, fresh)
    assert out.startswith(fresh.rstrip("\n")) and "stale" not in out
    assert B.extract_blocks(out) == B.extract_blocks(old)
    assert out.index("<!-- bench:toy -->") < out.index("<!-- bench:digits -->")
    # a block already in the new text wins; nothing is duplicated
    newer = fresh + "\n<!-- bench:toy -->\nT2\n<!-- /bench:toy -->\n"
    out = B.keep_bench_blocks(old, newer)
    assert out.count("<!-- bench:toy -->") == 1 and "T2" in out and "T1" not in out
    assert "D1" in out
    assert B.keep_bench_blocks("", fresh) == fresh


def test_write_block_replaces_in_place_and_appends_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "b.md"
    B.write_block(path, "toy", "first")
    assert path.read_text() == "<!-- bench:toy -->\nfirst\n<!-- /bench:toy -->\n"
    path.write_text("head\n\n" + path.read_text() + "\ntail\n")
    B.write_block(path, "toy", "second")
    B.write_block(path, "mixing", "m")
    assert path.read_text() == (
        "head\n\n<!-- bench:toy -->\nsecond\n<!-- /bench:toy -->\n\ntail\n\n"
        "<!-- bench:mixing -->\nm\n<!-- /bench:mixing -->\n"
    )


def test_make_bench_main_preserves_bench_blocks(tmp_path: Path, monkeypatch) -> None:
    """bench/run.py main() regenerates the file from scratch but keeps `phasediff bench`
    blocks (the expensive measurements are stubbed out)."""
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    for name in (
        "bench_sample_marginal",
        "bench_kernel",
        "bench_training",
        "bench_sampler_overhead",
        "bench_mild",
    ):
        monkeypatch.setattr(run, name, lambda name=name: [f"stub {name}"])
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\nold numbers\n\n<!-- bench:toy -->\nTOY\n<!-- /bench:toy -->\n")
    import torch

    threads = torch.get_num_threads()
    try:
        assert run.main(["--out", str(out), "--threads", str(threads)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert "old numbers" not in text and "stub bench_mild" in text
    assert text.rstrip().endswith("<!-- bench:toy -->\nTOY\n<!-- /bench:toy -->")


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"suite": "imagenet"}, "valid suites are: toy, digits, mixing, samplers-overhead"),
        ({"suite": "toy", "models": "vp,ddpm"}, "unknown model 'ddpm'"),
        ({"suite": "toy", "nfe": "10,x"}, "--nfe must be a comma-separated list of integers"),
        ({"suite": "toy", "nfe": "0"}, "--nfe must be"),
        ({"suite": "toy", "samplers": "mild"}, "sampler 'mild' is not part of the bench grid"),
        ({"suite": "toy", "num": 1}, "--num must be an integer ≥ 2"),
        ({"suite": "toy", "render_only": True}, "without --render-only first"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path: Path, kwargs, fragment) -> None:
    suite = kwargs.pop("suite")
    with pytest.raises(ValueError, match=None) as info:
        B.run_suite(suite, runs=tmp_path, docs=tmp_path / "b.md", threads=0, **kwargs)
    assert fragment in str(info.value)
    assert not (tmp_path / "b.md").exists()


def test_cli_bench_unknown_suite_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "nope", "--runs", str(tmp_path)])
    assert res.exit_code == 2 and "valid suites are" in res.output
    assert "Traceback" not in res.output
