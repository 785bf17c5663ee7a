"""Low-rank approximation out of core: randomized SVD, block Krylov, single pass, QB, Nystrom;
rank-revealing factorisations: randomized pivoted QR (CQRRPT), interpolative decompositions, CUR."""

from ._result import NystromResult, QBResult, SVDResult
from ._svd import nystrom, qb, svd
from ._qrcp import QRCPResult, qrcp
from ._interp import CURResult, IDResult, cur, interpolative

__all__ = ["svd", "qb", "nystrom", "qrcp", "interpolative", "cur", "SVDResult", "QBResult", "NystromResult",
           "QRCPResult", "IDResult", "CURResult"]
