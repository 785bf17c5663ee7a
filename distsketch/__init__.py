"""distsketch: distributed, out-of-core randomized numerical linear algebra.

Seeded, chunking-independent sketching operators over numpy, Dask/Zarr (and MPI)
row blocks, and the algorithms built on them.
"""

from . import errors, operators, passes, random
from . import matfree
from ._inputs import open_array
from .backends import as_rowdata
from .errors import (ArrayNotFoundError, DistsketchError, InputTypeError, NonFiniteError,
                     ParameterError, ShapeError)
from .errors import CheckpointError, CorruptChunkError, DataChangedError, MissingChunkError
from .operators import make_operator
from .sketch import sketch
from .solve import ConvergenceWarning, IllConditionedWarning, LstsqResult, lstsq
from .lowrank import NystromResult, QBResult, SVDResult, nystrom, qb, svd

__version__ = "0.1.0"

__all__ = [
    "sketch",
    "lstsq",
    "svd",
    "qb",
    "nystrom",
    "SVDResult",
    "QBResult",
    "NystromResult",
    "LstsqResult",
    "IllConditionedWarning",
    "ConvergenceWarning",
    "make_operator",
    "as_rowdata",
    "open_array",
    "errors",
    "operators",
    "passes",
    "random",
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
]
