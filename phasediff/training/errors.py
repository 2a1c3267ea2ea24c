"""Exceptions raised by the trainers, in a module of their own so that every trainer (score,
Hamiltonian score matching, classifier) and the CLI can import them without importing each
other."""

from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Training hit a NaN/Inf loss or gradient; the last good checkpoint is kept.

    `step` is the step whose batch was bad and `tensor` names what was non-finite: "loss" or
    "gradient of '<parameter name>'"."""

    def __init__(self, message: str, *, step: int = 0, tensor: str = "loss") -> None:
        super().__init__(message)
        self.step = step
        self.tensor = tensor
