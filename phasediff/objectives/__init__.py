"""Training objectives on the model contract `model(z, t)` → noisy-block tensor
(docs/design.md §2)."""

from phasediff.objectives.hamiltonian import (
    HAMILTONIAN_SCORE_MATCHING,
    VELOCITY,
    VELOCITY_OBJECTIVES,
    X0_PREDICTION,
    VelocityFromDenoiser,
    denoiser_coefficients,
    hgf_velocity,
    is_velocity_model,
    optimal_velocity_gaussian,
    optimal_velocity_mixture,
    predicts_x0,
)
from phasediff.objectives.preconditioning import (
    TIME_FEATURES,
    Preconditioned,
    reference_coefficients,
)
from phasediff.objectives.score_matching import (
    OBJECTIVES,
    PARAMETERIZATIONS,
    WEIGHTINGS,
    block_coordinate_score_matching,
    denoising_score_matching,
    get_objective,
    hybrid_score_matching,
    parameterization_of,
    sample_times,
    score_from_output,
)

OBJECTIVES["velocity"] = hgf_velocity  # HGF / flow-matching velocity regression (docs/hgf.md)

__all__ = [
    "HAMILTONIAN_SCORE_MATCHING",
    "OBJECTIVES",
    "PARAMETERIZATIONS",
    "TIME_FEATURES",
    "Preconditioned",
    "VELOCITY",
    "VELOCITY_OBJECTIVES",
    "WEIGHTINGS",
    "X0_PREDICTION",
    "VelocityFromDenoiser",
    "block_coordinate_score_matching",
    "denoiser_coefficients",
    "denoising_score_matching",
    "get_objective",
    "hgf_velocity",
    "hybrid_score_matching",
    "is_velocity_model",
    "optimal_velocity_gaussian",
    "optimal_velocity_mixture",
    "parameterization_of",
    "predicts_x0",
    "reference_coefficients",
    "sample_times",
    "score_from_output",
]
