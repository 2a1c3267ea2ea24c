"""Sample-quality metrics for vector data (2-D toys, small vectors): sliced/exact W2, MMD,
energy distance, mode-resolved comparisons and noise floors (see ``metrics``)."""

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

__all__ = [
    "energy_distance",
    "evaluate_toy",
    "exact_w2",
    "median_bandwidth",
    "mmd_rbf",
    "mode_resolved_sliced_w2",
    "mode_weights",
    "sliced_w2",
    "with_noise_floor",
]
