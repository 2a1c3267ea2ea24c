"""The shared helpers (issue 16 item 5), each against an independent computation:
PSD roots (phasediff.processes.linalg), atomic writes (phasediff.files), argument checks
(phasediff.validation)."""

from __future__ import annotations

import errno
import math
import os

import pytest
import torch

from phasediff.files import atomic_write_bytes, atomic_write_text
from phasediff.processes.linalg import psd_factor, psd_sqrt, symmetric_part
from phasediff.validation import check_int, check_positive, is_int, is_real


def _psd(k: int, rank: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, k, rank, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2)


CASES = [(4, 4, ()), (4, 2, ()), (3, 3, (5,)), (5, 1, (2, 3))]  # SPD, singular, batched


@pytest.mark.parametrize("k, rank, batch", CASES)
def test_psd_sqrt_squares_to_the_matrix_and_is_symmetric(k, rank, batch):
    m = _psd(k, rank, seed=k + rank, batch=batch)
    r = psd_sqrt(m)
    torch.testing.assert_close(r @ r, m, rtol=0, atol=1e-12)
    torch.testing.assert_close(r, r.transpose(-1, -2), rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(r).min()) > -1e-12  # the psd root, not another one


@pytest.mark.parametrize("k, rank, batch", CASES)
def test_psd_factor_reproduces_the_matrix(k, rank, batch):
    m = _psd(k, rank, seed=10 + k + rank, batch=batch)
    for symmetrize in (False, True):
        r = psd_factor(m, symmetrize=symmetrize)
        torch.testing.assert_close(r @ r.transpose(-1, -2), m, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            psd_sqrt(m, symmetrize=symmetrize), psd_sqrt(m), atol=1e-12, rtol=0
        )
    r, evals = psd_factor(m, return_eigenvalues=True)
    torch.testing.assert_close(evals, torch.linalg.eigvalsh(m), rtol=0, atol=1e-12)
    assert torch.equal(r, psd_factor(m))


def test_psd_sqrt_of_a_diagonal_matrix_clamps_round_off():
    m = torch.diag(torch.tensor([4.0, 0.0, -1e-18], dtype=torch.float64))
    torch.testing.assert_close(psd_sqrt(m), torch.diag(torch.tensor([2.0, 0.0, 0.0]).double()))
    assert bool(torch.isfinite(psd_factor(m)).all())


def test_symmetrize_removes_an_asymmetric_perturbation():
    m = _psd(3, 3, seed=0)
    skew = torch.tensor([[0.0, 1e-9, 0.0], [-1e-9, 0.0, 0.0], [0.0, 0.0, 0.0]]).double()
    torch.testing.assert_close(symmetric_part(m + skew), m, rtol=0, atol=1e-15)
    r = psd_factor(m + skew, symmetrize=True)
    torch.testing.assert_close(r @ r.T, m, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_bytes(path, b"old")
    atomic_write_text(path, "néw\n")
    assert path.read_bytes() == "néw\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("op", ["write", "fsync", "replace"])
def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch, op):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old contents")

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, op, fail)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(path, b"new contents" * 1000)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_into_a_missing_directory_names_the_target(tmp_path):
    path = tmp_path / "missing" / "out.txt"
    with pytest.raises(OSError) as info:
        atomic_write_text(path, "x")
    assert info.value.filename == str(path) and not path.parent.exists()


# ---------------------------------------------------------------------------- validators
def test_check_int_accepts_integers_and_returns_plain_ints():
    np = pytest.importorskip("numpy")
    assert check_int(3, "n") == 3
    out = check_int(np.int64(4), "n", 0, 10)
    assert out == 4 and type(out) is int
    assert check_int(0, "seed", 0) == 0


@pytest.mark.parametrize(
    "value, low, high, message",
    [
        (0, 1, None, "steps must be an integer ≥ 1, got 0."),
        (True, 1, None, "steps must be an integer ≥ 1, got True."),
        (2.0, 1, None, "steps must be an integer ≥ 1, got 2.0."),
        ("3", 2, None, "steps must be an integer ≥ 2, got '3'."),
        (10, 0, 10, "steps must be an integer in [0, 10), got 10."),
        (-1, 0, 10, "steps must be an integer in [0, 10), got -1."),
    ],
)
def test_check_int_refuses_with_one_sentence(value, low, high, message):
    with pytest.raises(ValueError) as info:
        check_int(value, "steps", low, high)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [0, -1.5, math.inf, math.nan, True, "1", None])
def test_check_positive_refuses_with_one_sentence(value):
    with pytest.raises(ValueError) as info:
        check_positive(value, "rtol")
    assert str(info.value) == f"rtol must be a finite number > 0, got {value!r}."


def test_check_positive_and_the_type_tests():
    assert check_positive(2, "x") == 2.0 and type(check_positive(2, "x")) is float
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_real(3) and is_real(2.5) and not is_real(False) and not is_real("2")


def test_the_packages_keep_their_messages():
    """A few call sites through the shared validators, messages as before the refactor."""
    from phasediff.data.toys import check_count, check_seed
    from phasediff.models import TimeMLP

    with pytest.raises(ValueError, match=r"^n must be an integer ≥ 1, got 0\.$"):
        check_count(0, "n")
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 5\), got 5\.$"):
        check_seed(5, "seed", 5)
    with pytest.raises(ValueError, match=r"^time_dim must be an integer ≥ 2, got 1\.$"):
        TimeMLP(k=1, data_dim=2, n_out=1, time_dim=1)
