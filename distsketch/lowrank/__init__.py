"""Low-rank approximation out of core: randomized SVD, block Krylov, single pass, QB, Nystrom."""

from ._result import NystromResult, QBResult, SVDResult
from ._svd import nystrom, qb, svd

__all__ = ["svd", "qb", "nystrom", "SVDResult", "QBResult", "NystromResult"]
