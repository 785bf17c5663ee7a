"""Exceptions and warnings raised by distsketch: all of them are defined here.

Every error class derives from :class:`DistsketchError` and from the builtin exception a
caller would catch without knowing distsketch (``ValueError``, ``TypeError``,
``FileNotFoundError``, ``ArithmeticError``), so ``except ValueError`` keeps working.
Every warning derives from :class:`DistsketchWarning` and from ``UserWarning``, so
``warnings.simplefilter("ignore", distsketch.errors.DistsketchWarning)`` silences them all.

Messages follow one pattern: what was required, what was received, how to fix it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DistsketchError",
    "ShapeError",
    "ParameterError",
    "NonFiniteError",
    "ArrayNotFoundError",
    "InputTypeError",
    "MissingChunkError",
    "CorruptChunkError",
    "DataChangedError",
    "CheckpointError",
    "GramFactorError",
    "SourceError",
    "SourceNotFoundError",
    "DistsketchWarning",
    "ConvergenceWarning",
    "IllConditionedWarning",
    "MissingDependencyError",
]


class DistsketchError(Exception):
    """Base class of every error distsketch raises on purpose."""


class ShapeError(DistsketchError, ValueError):
    """Operands have the wrong number of dimensions or incompatible shapes."""


class ParameterError(DistsketchError, ValueError):
    """An option is out of its allowed range or unknown."""


class NonFiniteError(DistsketchError, ValueError):
    """The data holds NaN or Inf; the message names the chunk (row and column range)."""


class ArrayNotFoundError(DistsketchError, FileNotFoundError):
    """A path or URL does not hold a Zarr array."""


class InputTypeError(DistsketchError, TypeError):
    """An input is of a type or dtype distsketch cannot use."""


class MissingChunkError(DistsketchError, FileNotFoundError):
    """A Zarr store lacks chunks its array's shape implies (Zarr would read them as the fill value)."""


class CorruptChunkError(DistsketchError, ValueError):
    """A stored chunk cannot be decoded (truncated or altered bytes); the message names store and key."""


class DataChangedError(DistsketchError, ValueError):
    """The data read now is not the data a checkpoint was written for (their fingerprints differ)."""


class CheckpointError(DistsketchError, ValueError):
    """A checkpoint file exists but cannot be read (truncated or not a distsketch checkpoint)."""


class GramFactorError(DistsketchError, np.linalg.LinAlgError, ArithmeticError):
    """The Cholesky factor of the preconditioned Gram matrix ``(A N).T (A N)`` does not exist.

    ``N`` comes from the sketch; the failure means the sketch did not embed the column
    space of ``A`` (too few rows, or row sampling of coherent data). Also a
    ``numpy.linalg.LinAlgError`` (itself a ``ValueError``, so code that caught the bare
    LAPACK error keeps working) and an ``ArithmeticError`` (a numerical failure, not a
    bad argument).
    """


class SourceError(DistsketchError, ValueError):
    """A model source (for the spectral analysis) that cannot be read: truncated, corrupt,
    of an unknown format, or unreadable (the message names the file and why)."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A model source path that does not exist, or a folder that holds no model files.

    Also a ``FileNotFoundError`` (like :class:`ArrayNotFoundError` for Zarr arrays); still a
    :class:`SourceError`, so ``except SourceError`` catches every unreadable source.
    """


class DistsketchWarning(UserWarning):
    """Base class of every warning distsketch issues."""


class IllConditionedWarning(DistsketchWarning):
    """cond(A) is estimated beyond 1/eps: the solution is the minimum-norm one over the kept rank."""


class ConvergenceWarning(DistsketchWarning):
    """The iteration limit was reached, or the iteration stalled, before the stopping test held."""


class MissingDependencyError(DistsketchError, ImportError):
    """An optional dependency (an extra such as ``distsketch[hessian]``) is not installed.

    The message names the package and the ``pip install`` line that provides it.
    """
