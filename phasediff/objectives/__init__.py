"""Training objectives on the model contract `model(z, t)` → noisy-block tensor (SPEC §2)."""

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

__all__ = [
    "OBJECTIVES",
    "PARAMETERIZATIONS",
    "WEIGHTINGS",
    "block_coordinate_score_matching",
    "denoising_score_matching",
    "get_objective",
    "hybrid_score_matching",
    "parameterization_of",
    "sample_times",
    "score_from_output",
]
