"""The exact phase-space process engine (docs/design.md §1). Imports nothing else of phasediff."""

from phasediff.processes.critical import chain_from_polynomial, critical_chain
from phasediff.processes.kernels import transition_kernel, van_loan
from phasediff.processes.linear import LinearProcess, apply_blocks, cholesky_factor
from phasediff.processes.presets import (
    PRESETS,
    ParameterError,
    cld,
    critical,
    get_process,
    hamiltonian,
    hold,
    langevin_chain,
    ohgf,
    psld,
    recipe,
    rectified_flow,
    subvp,
    ve,
    vp,
    zero_force,
)
from phasediff.processes.reverse import ReverseDynamics
from phasediff.processes.schedules import (
    BetaSchedule,
    ConstantBeta,
    GeometricVarianceBeta,
    LinearBeta,
)

__all__ = [
    "PRESETS",
    "ParameterError",
    "ReverseDynamics",
    "BetaSchedule",
    "ConstantBeta",
    "GeometricVarianceBeta",
    "LinearBeta",
    "LinearProcess",
    "apply_blocks",
    "chain_from_polynomial",
    "cholesky_factor",
    "cld",
    "critical",
    "critical_chain",
    "get_process",
    "hamiltonian",
    "hold",
    "langevin_chain",
    "ohgf",
    "psld",
    "recipe",
    "rectified_flow",
    "subvp",
    "transition_kernel",
    "van_loan",
    "ve",
    "vp",
    "zero_force",
]
