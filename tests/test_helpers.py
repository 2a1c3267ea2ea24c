"""The shared helpers (issue 16 item 5), each against an independent computation:
PSD roots (phasediff.processes.linalg), atomic writes (phasediff.files)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from phasediff.files import atomic_write_bytes, atomic_write_text
from phasediff.processes.linalg import psd_factor, psd_sqrt, symmetric_part


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
