"""Your own data (`data.name = "points"`, phasediff/data/points.py): .npy/.npz/.csv files of
(N, d) points, the seeded held-out split, standardisation recorded in the run and undone at
sampling, and one sentence with exit 2 for each bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import phasediff
from phasediff.cli import app
from phasediff.data import get_data
from phasediff.data.points import load_points

TINY = [
    "--set",
    "train.steps=20",
    "--set",
    "train.ckpt_every=20",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.tensorboard=false",
    "--set",
    "model.hidden=32",
    "--no-progress",
]


def _points(n: int, d: int, seed: int = 0, shift: float = 0.0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return (shift + scale * rng.normal(size=(n, d))).astype(np.float64)


def _train(path, tmp_path, *extra):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "configs/toy_cld.toml",
            "--out",
            str(out),
            "--set",
            "data.name='points'",
            "--set",
            f"data.path='{path}'",
            *TINY,
            *extra,
        ],
    )
    return out, result


@pytest.mark.parametrize("d", [2, 8])
def test_cli_trains_samples_and_evaluates_a_user_array(tmp_path, d):
    path = tmp_path / "x.npy"
    np.save(path, _points(600, d))
    out, result = _train(path, tmp_path)
    assert result.exit_code == 0, result.output
    samples = tmp_path / "s.npz"
    result = CliRunner().invoke(
        app, ["sample", str(out), "--steps", "4", "--num", "200", "--out", str(samples)]
    )
    assert result.exit_code == 0, result.output
    assert np.load(samples)["x"].shape == (200, d)
    assert samples.with_suffix(".png").is_file()  # d = 8: the first two coordinates
    result = CliRunner().invoke(app, ["eval", str(out), "--samples", str(samples)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]["toy"]
    # no mode centres for a user's data: the mode-free distances, each with its floor
    assert "mode_tvd" not in metrics and metrics["sliced_w2"]["floor"] > 0


def test_npz_and_csv_read_the_same_points(tmp_path):
    x = _points(50, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "one.npz", pts=x)
    np.savez(tmp_path / "two.npz", pts=x, labels=np.arange(50))
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    np.savetxt(tmp_path / "header.csv", x, delimiter=",", header="a,b,c", comments="")
    for name, key in [
        ("a.npy", None),
        ("one.npz", None),
        ("two.npz", "pts"),
        ("plain.csv", None),
        ("header.csv", None),
    ]:
        # savetxt writes 18 significant digits: the csv round trip is exact in float64
        np.testing.assert_array_equal(load_points(tmp_path / name, key), x, err_msg=name)
    assert load_points(tmp_path / "a.npy").shape == (50, 3)
    np.save(tmp_path / "flat.npy", x[:, 0])
    assert load_points(tmp_path / "flat.npy").shape == (50, 1)  # (N,) is d = 1


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    x = _points(200, 2, shift=100.0, scale=5.0)
    np.save(tmp_path / "x.npy", x)
    a = get_data("points", path=str(tmp_path / "x.npy"), seed=3, held_out_fraction=0.25)
    b = get_data("points", path=str(tmp_path / "x.npy"), seed=3, held_out_fraction=0.25)
    c = get_data("points", path=str(tmp_path / "x.npy"), seed=4, held_out_fraction=0.25)
    assert a.n_train == 150 and torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)
    held = a.held_out(50, seed=0)  # all 50 held-out rows, without replacement
    rows = torch.cat([a.data, held]).double().numpy()
    # the two parts are the file's rows, each once (float32 storage: 1e-5 relative at 100)
    np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(x, axis=0), rtol=1e-6)
    assert a.held_out(80, seed=1).shape == (80, 2)  # more than held out: with replacement


def test_standardisation_is_recorded_and_undone_at_sampling(tmp_path):
    x = _points(1000, 2, shift=100.0, scale=5.0)
    np.save(tmp_path / "x.npy", x)
    out, result = _train(tmp_path / "x.npy", tmp_path, "--set", "data.standardize=true")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "config.json").read_text())["data"]
    source = get_data("points", path=str(tmp_path / "x.npy"), standardize=True)
    train_rows = source.standardization.decode(source.data.double())
    # the recorded mean/std are the training rows' (float32 rows: 1e-5 relative)
    np.testing.assert_allclose(recorded["mean"], train_rows.mean(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(recorded["std"], train_rows.std(0, correction=0).numpy(), rtol=1e-5)
    assert abs(float(source.data.mean())) < 1e-5 and abs(float(source.data.std()) - 1) < 1e-2
    run = phasediff.load(out)
    s = run.sample(500, steps=4)
    # samples come back in the file's units: centred near 100, not near 0 (≥ 10 σ apart)
    assert abs(float(s.x.mean()) - 100.0) < 10.0, float(s.x.mean())
    # the CLI writes the same samples, in the same units
    result = CliRunner().invoke(
        app, ["sample", str(out), "--steps", "4", "--num", "500", "--out", str(tmp_path / "s.npz")]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["x"], s.x.numpy())
    # a changed file does not change the mapping: the run's numbers are used on load
    np.save(tmp_path / "x.npy", 2 * x)
    assert torch.equal(phasediff.load(out).data.standardization.mean, run.data.standardization.mean)


BAD_FILES = {
    "ragged.csv": ("1,2\n3,4,5\n", "ragged rows: data row 2 has 3 columns"),
    "strings.csv": ("a,b\n1,x\n", "non-numeric value 'x' in data row 1"),
    "empty.csv": ("a,b\n", "has a header but no data rows"),
    "nan.npy": (np.array([[1.0, np.nan], [2.0, 3.0]]), "1 rows with NaN or Inf"),
    "inf.csv": ("1,2\n3,inf\n", "1 rows with NaN or Inf"),
    "zero.npy": (np.zeros((0, 2)), "holds 0 rows"),
    "text.npy": (np.array([["a", "b"]]), "points must be numbers"),
    "cube.npy": (np.zeros((3, 2, 2)), "points must be (N, d)"),
    "two.npz": ({"a": np.zeros((3, 2)), "b": np.zeros(3)}, "holds 2 arrays (a, b)"),
    "x.txt": ("1,2\n", "must end in .npy, .npz, .csv"),
    "missing.npy": (None, "does not exist"),
    "one_row.npy": (np.zeros((1, 2)), "needs at least 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_get_one_sentence_and_exit_2(tmp_path, name):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    _, result = _train(path, tmp_path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("\n") <= 2, result.output  # one sentence


def test_missing_key_and_missing_path_are_named(tmp_path):
    np.savez(tmp_path / "a.npz", pts=np.zeros((5, 2)))
    _, result = _train(tmp_path / "a.npz", tmp_path, "--set", "data.key='nope'")
    assert result.exit_code == 2 and "has no array 'nope' (data.key)" in result.output
    result = CliRunner().invoke(
        app,
        [
            "train",
            "configs/toy_cld.toml",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "data.name='points'",
        ],
    )
    assert result.exit_code == 2 and "needs data.path" in result.output


def test_hamiltonian_score_matching_trains_on_a_points_file(tmp_path):
    """The force-field trainer reads the same datasets as the score trainer, your own points
    included, and records the standardisation so that `load_force` maps back with the run's
    numbers (not the file's, which may have changed since)."""
    from phasediff.training import HamiltonianSMTrainer, load_config
    from phasediff.training.hamiltonian_sm import load_force

    x = _points(400, 3, shift=50.0, scale=2.0)
    np.save(tmp_path / "x.npy", x)
    overrides = [
        "data.name='points'",
        f"data.path='{tmp_path / 'x.npy'}'",
        "data.standardize=true",
        "train.steps=3",
        "train.ckpt_every=3",
        "train.batch_size=32",
        "train.tensorboard=false",
        "model.hidden=16",
        "model.depth=2",
        "model.time_dim=8",
        "hamiltonian_sm.velocity_steps=1",
        "hamiltonian_sm.leapfrog_steps=2",
    ]
    cfg = load_config("configs/toy_hamiltonian_sm.toml", overrides)
    summary = HamiltonianSMTrainer(cfg, tmp_path / "run", progress=False).fit()
    assert summary["step"] == 3
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert len(recorded["mean"]) == 3 and 40.0 < recorded["mean"][0] < 60.0  # shift 50, σ 2
    np.save(tmp_path / "x.npy", 2 * x)  # the file changes; the run keeps its numbers
    force, _, data = load_force(tmp_path / "run")
    np.testing.assert_allclose(data.standardization.mean.numpy(), recorded["mean"], rtol=1e-12)
    assert force(torch.zeros(5, 3)).shape == (5, 3)
