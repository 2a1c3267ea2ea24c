"""Evaluation (docs/design.md §6): sample-quality metrics with noise floors for vector data
(``metrics``), likelihoods through the probability-flow ODE (``likelihood``), Fréchet
distances for images — the offline digits FD and Inception FID from a user-supplied
TorchScript file (``fid``) —, exact mixture scores (``exact``), the evaluation of samples and
loaded models behind ``phasediff eval`` (``report``) and the HOLD-style figures behind
``phasediff plot`` (``figures``). See docs/evaluation.md.

It imports neither ``phasediff.training`` nor ``phasediff.bench`` (docs/design.md §9): loading
a trained run (``evaluate_run``) and the benchmark harness behind ``phasediff bench``
(``run_suite``) live in ``phasediff.bench``, above both."""

from phasediff.evaluation.exact import MixtureScore
from phasediff.evaluation.fid import (
    digits_features,
    fd_with_floor,
    frechet_distance,
    inception_features,
)
from phasediff.evaluation.likelihood import (
    LikelihoodResult,
    bits_per_dim,
    dequantize,
    image_bits_per_dim,
    negative_log_likelihood,
    ode_log_density,
)
from phasediff.evaluation.metrics import (
    energy_distance,
    evaluate_toy,
    exact_w2,
    median_bandwidth,
    mmd_rbf,
    mode_resolved_sliced_w2,
    mode_weights,
    sliced_w2,
    with_noise_floor,
)
from phasediff.evaluation.report import evaluate_likelihood, evaluate_model, evaluate_samples

__all__ = [
    "LikelihoodResult",
    "MixtureScore",
    "bits_per_dim",
    "dequantize",
    "digits_features",
    "energy_distance",
    "evaluate_likelihood",
    "evaluate_model",
    "evaluate_samples",
    "evaluate_toy",
    "exact_w2",
    "fd_with_floor",
    "frechet_distance",
    "image_bits_per_dim",
    "inception_features",
    "median_bandwidth",
    "mmd_rbf",
    "mode_resolved_sliced_w2",
    "mode_weights",
    "negative_log_likelihood",
    "ode_log_density",
    "sliced_w2",
    "with_noise_floor",
]
