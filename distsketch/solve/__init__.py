"""Least squares: sketch-and-solve, sketch-and-precondition LSQR, randomized Cholesky QR."""

from ._result import LstsqResult
from .lstsq import METHODS, ConvergenceWarning, IllConditionedWarning, choose_method, lstsq

__all__ = ["lstsq", "LstsqResult", "IllConditionedWarning", "ConvergenceWarning", "choose_method", "METHODS"]
