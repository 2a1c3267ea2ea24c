"""Evaluate samples or a trained model: the Python side of ``phasediff eval`` (docs/design.md
§6, §7).

* ``evaluate_samples(samples, data)``: vector data → every metric of ``evaluate_toy`` with its
  noise floor (mode-resolved metrics when the dataset has mode centres); images with a
  feature extractor (digits) → its Fréchet distance with its floor (and the classifier's
  accuracy); images with ``fid=True`` (the network of the ``phasediff[fid]`` extra) or
  ``inception=PATH`` → Inception FID, KID and precision/recall, each with its floor.
* ``evaluate_likelihood(model, process, data)``: NLL (bound) of held-out data through the
  PF-ODE; images in bits/dim after uniform dequantisation on their grid.
* ``evaluate_model(model, process, data, out=DIR)``: sample a loaded model (or read
  ``--samples``), evaluate, write ``metrics.json`` and a samples-vs-data figure.

What to compare against is read from the ``DataSource`` (``mode_centers``, ``features``,
``reference_size``), never from a dataset's name. Loading a trained run is not done here
(evaluation does not import training, docs/design.md §9): ``phasediff.bench.evaluate_run``
loads a run and calls ``evaluate_model``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phasediff.data import DataSource
from phasediff.evaluation.metrics import evaluate_toy

__all__ = [
    "check_eval_options",
    "evaluate_likelihood",
    "evaluate_model",
    "evaluate_samples",
    "infer_levels",
    "load_samples",
    "mode_centers",
    "reference_size",
]

DEFAULT_REFERENCE_SIZE = 5000
"""Held-out examples image samples are compared against when the dataset names none."""


def mode_centers(data: DataSource | str) -> torch.Tensor | None:
    """The mode centres a dataset carries (``DataSource.mode_centers``), else None. A name
    builds the built-in dataset first (kept for callers that hold only a name)."""
    if isinstance(data, str):
        from phasediff.data import DATASETS, get_data

        if data not in DATASETS:
            return None
        data = get_data(data, n_train=1)
    return data.mode_centers


def reference_size(data: DataSource) -> int:
    """Held-out examples image samples are compared against (``DataSource.reference_size``;
    digits: its whole 297-image split), else ``DEFAULT_REFERENCE_SIZE``."""
    return data.reference_size or DEFAULT_REFERENCE_SIZE


def _check_samples(samples: object, data: DataSource) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise ValueError("samples must be a floating-point torch.Tensor (N, *data_shape).")
    if tuple(samples.shape[1:]) != tuple(data.data_shape) or samples.shape[0] < 2:
        raise ValueError(
            f"samples must have shape (N ≥ 2, {', '.join(map(str, data.data_shape))}) for "
            f"dataset {data.name!r}, got {tuple(samples.shape)}."
        )
    if not torch.isfinite(samples).all():
        bad = int((~torch.isfinite(samples.reshape(samples.shape[0], -1))).any(1).sum())
        raise ValueError(
            f"samples must be finite, but {bad} of {samples.shape[0]} contain NaN or Inf "
            "(the sampler diverged: try more steps or another sampler)."
        )
    return samples


def evaluate_samples(
    samples: torch.Tensor,
    data: DataSource,
    *,
    seed: int = 0,
    inception: str | Path | None = None,
    fid: bool = False,
    fid_num: int | None = None,
    cache: str | Path | None = None,
    progress: bool = False,
    repeats: int = 1,
) -> dict[str, Any]:
    """Quality of ``samples`` (N, *data_shape) against held-out data of ``data``, with floors.

    Vector data: ``evaluate_toy`` (n = N held-out points, seeds ``seed``…``seed+2``; exact W2
    for N ≤ 5000; mode metrics when ``data.mode_centers`` is set: multi_swiss_roll,
    thin_rolls, 8gaussians). Images with ``data.features`` (digits): ``<name>_fd`` =
    ``fd_with_floor`` of those features against ``reference_size(data)`` held-out images
    (digits: all 297), plus the extractor's facts (the classifier accuracy).
    ``fid`` (the TorchScript Inception-v3 of the ``phasediff[fid]`` extra) or ``inception``
    (a path to ``inception-2015-12-05.pt``; it wins over ``fid``): ``fid.image_metrics`` on
    2048-d Inception features, any image data: ``inception_fid``, ``inception_kid`` (± SE),
    ``inception_precision_recall``, each with its floor, against ``fid_num`` held-out images
    (default ``reference_size(data)``), plus ``inception_network`` (which file, which input
    convention). ``progress`` shows the feature pass's tqdm bar. ``repeats``: vector data's
    cheap distances averaged over that many held-out references (``evaluate_toy``).
    """
    samples = _check_samples(samples, data)
    out: dict[str, Any] = {"dataset": data.name, "num_samples": int(samples.shape[0])}
    if data.kind == "vector":

        def held_out(n: int, s: int) -> torch.Tensor:
            return data.held_out(n, seed=s)

        out["toy"] = evaluate_toy(
            samples.to(torch.float64),
            held_out,
            centers=data.mode_centers,
            seed=seed,
            repeats=repeats,
        )
        return out
    inception_metrics = fid or inception is not None
    if data.features is None and not inception_metrics:
        raise ValueError(
            f"no image metric applies to dataset {data.name!r} without an Inception network; "
            "pass --fid (pip install 'phasediff[fid]') or --inception PATH to "
            "inception-2015-12-05.pt."
        )
    from phasediff.evaluation import fid as fd

    if inception_metrics:  # fail before the digits pass when the network is missing
        network = fd.fid_network(inception)
    reference = data.held_out(reference_size(data), seed=seed)
    if data.features is not None:
        key, extract, info = _feature_extractor(data.features)
        features = extract(samples, cache=cache)
        ref_features = extract(reference, cache=cache)
        facts = info(cache) if info is not None else {}
        out[key] = fd.fd_with_floor(features, ref_features, seed=seed)
        out.update(facts)
    if inception_metrics:
        if fid_num is not None:
            reference = data.held_out(fid_num, seed=seed)
        feats = fd.network_features(
            samples, network, progress=progress, desc="Inception features (samples)"
        )
        ref = fd.network_features(
            reference, network, progress=progress, desc="Inception features (held-out)"
        )
        metrics = fd.image_metrics(feats, ref, seed=seed)
        out["inception_fid"] = metrics["fid"]
        out["inception_kid"] = metrics["kid"]
        out["inception_precision_recall"] = metrics["precision_recall"]
        out["inception_network"] = {
            "file": network.source,
            "convention": network.convention.name,
            "num_held_out": int(reference.shape[0]),
        }
    return out


def _feature_extractor(features):
    """(report key, features(images, cache=…), info(cache) or None) of ``data.features``."""
    from phasediff.evaluation import fid

    if isinstance(features, str):
        if features not in fid.FEATURE_EXTRACTORS:
            raise ValueError(
                f"unknown feature extractor {features!r}; known ones are: "
                f"{', '.join(fid.FEATURE_EXTRACTORS)}."
            )
        entry = fid.FEATURE_EXTRACTORS[features]
        return f"{features}_fd", entry.features, entry.info

    def extract(images: torch.Tensor, cache=None) -> np.ndarray:
        return np.asarray(features(images), dtype=np.float64)

    return "features_fd", extract, None


def infer_levels(images: torch.Tensor) -> tuple[int, tuple[float, float]]:
    """(levels, data_range) of quantised images: values on low + jΔ, j = 0…levels−1."""
    values = torch.unique(images.to(torch.float64))
    if values.numel() < 2 or values.numel() > 4096:
        raise ValueError(
            f"cannot infer the quantisation of the data: it has {values.numel()} distinct "
            "values (expected 2…4096 grey levels)."
        )
    lo, hi = float(values[0]), float(values[-1])
    step = float(torch.diff(values).min())
    levels = int(round((hi - lo) / step)) + 1
    j = (values - lo) / ((hi - lo) / (levels - 1))
    if float((j - j.round()).abs().max()) > 1e-3:
        raise ValueError("cannot infer the quantisation of the data: its values are not on a grid.")
    return levels, (lo, hi)


def evaluate_likelihood(
    model,
    process,
    data: DataSource,
    *,
    num: int = 256,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    batch_size: int = 256,
) -> dict[str, Any]:
    """NLL of ``num`` held-out examples through the PF-ODE (``likelihood``), as a JSON dict.

    Vectors: nats and nats/dim (the augmented bound for k ≥ 2). Images: uniform
    dequantisation on the data's own grid (``infer_levels`` on the training set; digits:
    17 levels in [−1, 1]) and bits/dim.
    """
    from phasediff.evaluation import likelihood as L

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"the number of NLL examples must be an integer ≥ 1, got {num!r}.")
    held = data.held_out(num, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if data.kind == "image":
        levels, data_range = infer_levels(data.data)
        res = L.image_bits_per_dim(
            model,
            process,
            held,
            levels=levels,
            data_range=data_range,
            rtol=rtol,
            atol=atol,
            batch_size=batch_size,
            generator=generator,
        )
        summary = res.summary()
        summary.update(levels=levels, data_range=list(data_range))
    else:
        res = L.negative_log_likelihood(
            model, process, held, rtol=rtol, atol=atol, batch_size=batch_size, generator=generator
        )
        summary = res.summary()
    summary.update(rtol=rtol, atol=atol, seconds=round(time.perf_counter() - t0, 2))
    return summary


def load_samples(path: str | Path, data: DataSource, num: int | None = None) -> torch.Tensor:
    """Samples from an .npz file written by ``phasediff sample`` (array ``x``), checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"samples file {str(path)!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
        names = list(archive.files)
        x = np.asarray(archive["x"]) if "x" in names else None
        archive.close()
    except Exception as exc:  # zip, pickle or format errors: not an npz archive
        raise ValueError(
            f"samples file {str(path)!r} is not a readable .npz archive ({type(exc).__name__})."
        ) from None
    if x is None:
        raise ValueError(
            f"samples file {str(path)!r} has no array 'x' (it has: "
            f"{', '.join(names) or 'nothing'}); write it with phasediff sample."
        )
    if x.dtype.kind != "f":
        raise ValueError(f"samples 'x' in {str(path)!r} must be floating point, got {x.dtype}.")
    samples = torch.from_numpy(x.astype(np.float32, copy=False))
    if num is not None:
        if samples.shape[0] < num:
            raise ValueError(
                f"--num {num} asks for more samples than {str(path)!r} holds ({samples.shape[0]})."
            )
        samples = samples[:num]
    return _check_samples(samples, data)


def check_eval_options(
    *,
    num: int | None = None,
    steps: int = 50,
    nll: bool = False,
    nll_num: int = 256,
    nll_tol: float = 1e-5,
    inception: str | Path | None = None,
    fid: bool = False,
    fid_num: int | None = None,
) -> None:
    """The checks of ``phasediff eval``'s options, before anything is loaded or drawn."""
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 2):
        raise ValueError(f"--num must be an integer ≥ 2, got {num!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be an integer ≥ 1, got {steps!r}.")
    if nll and (isinstance(nll_num, bool) or not isinstance(nll_num, int) or nll_num < 1):
        raise ValueError(f"--nll-num must be an integer ≥ 1, got {nll_num!r}.")
    if nll and not (isinstance(nll_tol, int | float) and 0 < nll_tol < 1):
        raise ValueError(f"--nll-tol must be a number in (0, 1), got {nll_tol!r}.")
    if inception is not None and not Path(inception).is_file():
        from phasediff.evaluation.fid import _missing_inception

        raise ValueError(_missing_inception(inception))
    if fid_num is not None and (
        isinstance(fid_num, bool) or not isinstance(fid_num, int) or fid_num < 8
    ):
        raise ValueError(f"--fid-num must be an integer ≥ 8, got {fid_num!r}.")
    if fid and inception is None:
        from phasediff.evaluation.fid import packaged_inception_path

        packaged_inception_path()  # the one sentence naming the extra when it is missing


def evaluate_model(
    model,
    process,
    data: DataSource,
    *,
    out: str | Path,
    samples: str | Path | torch.Tensor | None = None,
    num: int | None = None,
    sampler: str = "lie_trotter",
    steps: int = 50,
    grid: str | None = None,
    seed: int = 0,
    inception: str | Path | None = None,
    fid: bool = False,
    fid_num: int | None = None,
    nll: bool = False,
    nll_num: int = 256,
    nll_tol: float = 1e-5,
    cache: str | Path | None = None,
    report: dict[str, Any] | None = None,
    progress: bool = False,
    final: str | None = None,
    data_range=None,
    x0_guard: bool | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Evaluate a loaded model; writes ``metrics.json`` and ``samples.png`` into ``out`` and
    returns the report (``report``'s entries first, e.g. the run it came from).

    Samples come from ``samples`` (an .npz with ``x``, or a tensor of data-space samples; the
    first ``num`` are used; for standardised points data in the file's units) or are drawn with
    ``sampler``/``steps``/``grid`` (``num`` defaults to 2000; ``grid=None`` is the sampler's
    default grid). Distances are computed in the model's units (standardised, if so). ``nll``
    adds the held-out NLL (``evaluate_likelihood``, dopri5 at rtol = atol = ``nll_tol``).
    ``fid``/``fid_num``/``inception``: the Inception metrics of `evaluate_samples`.
    ``progress`` shows the sampler's and the feature pass's tqdm bars. ``final``: the drawn
    samples' last step, as `TrainedRun.sample` (default "denoise" for fixed-step samplers of
    score models, projected onto ``data_range``, the run's recorded `DataRange`, by default
    that of the training set; `phasediff.samplers.final`). ``x0_guard`` (default on for
    score models): the x̂₀ guard on that range (`phasediff.samplers.guard`).
    """
    from phasediff.data.sanity import DataRange, check_samples
    from phasediff.evaluation.figures import compare_samples
    from phasediff.samplers.final import final_step_options
    from phasediff.samplers.registry import get_sampler, resolve

    check_eval_options(
        num=num,
        steps=steps,
        nll=nll,
        nll_num=nll_num,
        nll_tol=nll_tol,
        inception=inception,
        fid=fid,
        fid_num=fid_num,
    )
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; pass a directory.")
    report = {**(report or {}), "process": process.name, "dataset": data.name}
    if isinstance(samples, torch.Tensor):
        x = _check_samples(samples if num is None else samples[:num], data)
        report["samples"] = {"tensor": True, "num": int(x.shape[0])}
    elif samples is not None:
        x = load_samples(samples, data, num)
        report["samples"] = {"file": str(samples), "num": int(x.shape[0])}
    if samples is not None and data.standardization is not None:
        x = data.standardization.encode(x)  # given in the file's units; compared in the model's
        report["samples"]["standardized"] = True
    if samples is None:
        entry = resolve(sampler, model)
        fn = get_sampler(sampler)  # with the entry's own options (ei1c: order 1, corrector)
        grid = entry.default_grid if grid is None else grid
        box = DataRange.of(data.data) if data_range is None else data_range
        last = final_step_options(
            final, model, (box.low, box.high), adaptive=entry.adaptive, x0_guard=x0_guard
        )
        n = 2000 if num is None else num
        t0 = time.perf_counter()
        res = fn(
            model,
            process,
            (n, *data.data_shape),
            steps,
            grid=grid,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
            **last,
        )
        raw = res.x if res.unprojected is None else res.unprojected  # before the projection
        check = check_samples(raw.detach().float(), box)  # as phasediff sample counts them
        x = _check_samples(res.x.detach().float(), data)
        report["samples"] = {
            "sampler": sampler,
            "steps": steps,
            "grid": grid,
            "num": n,
            "nfe": res.nfe,
            "seconds": round(time.perf_counter() - t0, 2),
            "seed": seed,
            "final": last["final"],
            "projected": res.projected,
            "guarded": res.guarded,
            "guarded_far": res.guarded_far,
            "far": check.far,
        }
    report["metrics"] = evaluate_samples(
        x,
        data,
        seed=seed,
        inception=inception,
        fid=fid,
        fid_num=fid_num,
        cache=cache,
        progress=progress,
        repeats=repeats,
    )
    if nll:
        report["nll"] = evaluate_likelihood(
            model, process, data, num=nll_num, seed=seed, rtol=nll_tol, atol=nll_tol
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=1, allow_nan=False))
        reference = data.held_out(min(x.shape[0], reference_size(data)), seed=seed + 100)
        label = report["samples"].get("sampler", Path(str(samples)).name)
        compare_samples(out_dir / "samples.png", x, reference, title=f"{process.name}, {label}")
    except OSError as exc:
        raise ValueError(
            f"cannot write the evaluation to {str(out_dir)!r} ({exc.strerror}); choose --out."
        ) from None
    report["out"] = str(out_dir)
    return report
