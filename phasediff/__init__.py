"""phasediff: exact, fast phase-space diffusion models (see README.md and docs/)."""

from phasediff import processes

__all__ = ["processes"]
__version__ = "0.1.0"
