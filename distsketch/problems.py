"""Test problems written to Zarr block by block: prescribed singular values and known solutions.

``A = U diag(s) V.T`` with ``U`` (``m x n``) orthonormal and ``V`` (``n x n``) orthogonal;
``U`` is produced a row block at a time as ``G R^{-1}``, where ``G`` is a seeded
Gaussian (the Gaussian sketching operator's panels, so the matrix does not depend on
the chunking it is written with) and ``R`` the Cholesky factor of ``G.T G`` from a
first streaming pass. Because ``m >> n`` makes ``G`` well conditioned, one Cholesky QR
already gives ``||U.T U - I|| = O(eps)``. Nothing of size ``m x n`` is ever held.

The right-hand side is ``b = A x + r`` with ``x`` in the row space of ``A`` (so ``x`` is
the minimum-norm least-squares solution, as gelsd returns it) and ``r`` orthogonal to
``range(A)``, scaled so that ``||A A^+ b|| = frac_in_range * ||b||``. For ``m < n``
(underdetermined) the transpose is generated and ``b = A x`` is consistent, with ``x``
the minimum-norm solution.

Layout of the store (a Zarr group at ``path``): arrays ``A`` (``m x n``), ``b`` (``m``),
``x`` (``n``), ``s`` (``min(m, n)``); ``attrs`` record every parameter, the seed, and
``norm_r`` = ``||b - A x||``. The group is written under a temporary name and renamed
into place, so a failed run leaves nothing half-written at ``path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ._atomic import atomic_folder
from .errors import ParameterError
from .operators import Gaussian
from .random.streams import resolve_seed, stream_generator

__all__ = ["Problem", "singular_values", "generate_problem", "open_problem"]

DECAYS = ("geometric", "poly", "flat_drop", "linear")


def singular_values(n: int, *, cond: float = 1e4, decay: str = "geometric", rank: int | None = None,
                    power: float = 0.5, flat: int | None = None, sigma_max: float = 1.0) -> np.ndarray:
    """Singular values (descending, length ``n``) of a test matrix.

    decay:
        ``"geometric"``: log-spaced from ``sigma_max`` to ``sigma_max / cond`` (default);
        ``"linear"``: evenly spaced between the same ends;
        ``"poly"``: ``sigma_max * i**-power`` for ``i = 1..r`` (``cond`` is ignored);
        ``"flat_drop"``: ``flat`` values equal to ``sigma_max`` (default ``r // 2``), the
        rest ``sigma_max / cond``.
    rank:
        Exact rank ``r``: values ``r..n-1`` are zero.
    """
    if decay not in DECAYS:
        raise ParameterError(f"unknown decay profile {decay!r}; expected one of {DECAYS}")
    r = n if rank is None else int(rank)
    if not 1 <= r <= n:
        raise ParameterError(f"rank must be between 1 and n={n}; got {rank}")
    if cond < 1:
        raise ParameterError(f"cond must be >= 1; got {cond}")
    i = np.arange(r)
    if decay == "geometric":
        s = cond ** (-i / max(r - 1, 1))
    elif decay == "linear":
        s = 1 - (1 - 1 / cond) * i / max(r - 1, 1)
    elif decay == "poly":
        s = (i + 1.0) ** (-power)
    else:
        k = r // 2 if flat is None else int(flat)
        s = np.where(i < k, 1.0, 1.0 / cond)
    out = np.zeros(n)
    out[:r] = sigma_max * s
    return out


@dataclass(frozen=True)
class Problem:
    """A generated problem on disk; arrays open lazily (dask) or eagerly (numpy)."""

    path: str
    shape: tuple[int, int]
    dtype: str
    seed: int
    s: np.ndarray = field(repr=False)
    x: np.ndarray = field(repr=False)
    norm_r: float
    attrs: dict = field(repr=False, default_factory=dict)

    @property
    def cond(self) -> float:
        nz = self.s[self.s > 0]
        return float(nz[0] / nz[-1])

    def dask(self, name: str = "A", *, allow_missing_chunks: bool = False):
        """The array ``name`` of the store as a dask array chunked like the store (verified reads:
        see :func:`distsketch.open_array`)."""
        from ._inputs import open_array

        return open_array(os.path.join(self.path, name), allow_missing_chunks=allow_missing_chunks)

    def numpy(self, name: str = "A", *, allow_missing_chunks: bool = False) -> np.ndarray:
        """The array ``name`` read whole into memory (missing or undecodable chunks raise)."""
        from ._inputs import open_zarr_array, read_rows

        path = os.path.join(self.path, name)
        z = open_zarr_array(path, allow_missing_chunks=allow_missing_chunks)
        return read_rows(z, 0, z.shape[0], path)


def open_problem(path) -> Problem:
    """Re-open a problem written by :func:`generate_problem`."""
    import zarr

    g = zarr.open_group(os.fspath(path), mode="r")
    a = dict(g.attrs)
    return Problem(path=os.fspath(path), shape=tuple(g["A"].shape), dtype=str(g["A"].dtype), seed=a["seed"],
                   s=g["s"][...], x=g["x"][...], norm_r=a["norm_r"], attrs=a)


def _row_chunks(m: int, n: int, chunks, itemsize: int) -> tuple[int, int]:
    if chunks is None:
        rows = max(1024, (32 * 2**20 // max(1, n * itemsize)))
        return (min(m, rows), n)
    if isinstance(chunks, int):
        return (min(m, chunks), n)
    r, c = chunks
    return (min(m, int(r)), min(n, int(c)))


def _zstd():
    """zstd with its content checksum: a truncated or bit-flipped chunk fails to decode (and is named)
    instead of reading as wrong numbers (without it, zstd passes most flips in incompressible data)."""
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=0, checksum=True)


def generate_problem(path, m: int, n: int, *, cond: float = 1e4, decay: str = "geometric",
                     rank: int | None = None, power: float = 0.5, flat: int | None = None,
                     s=None, frac_in_range: float = 1.0, chunks=None, dtype="float64",
                     seed=0, overwrite: bool = False, progress: bool = False) -> Problem:
    """Write ``A``, ``b``, ``x``, ``s`` of a test problem to a Zarr group at ``path``.

    Parameters
    ----------
    path : str or path
        Where the group goes; renamed into place when complete.
    m, n : int
        Shape of ``A`` (tall ``m >= n`` or wide ``m < n``).
    cond, decay, rank, power, flat
        Singular-value profile, see :func:`singular_values`; or give ``s`` directly.
    frac_in_range : float
        ``||A A^+ b|| / ||b||`` in ``[0, 1]``: 1 is a consistent system. Must be 1 for
        ``m < n`` (the system is then consistent by construction).
    chunks : int or (int, int), optional
        Rows per chunk (full width), or a 2-D chunk shape. Default: about 32 MiB a chunk.
    dtype : {"float64", "float32"}
    seed : int, SeedSequence, Generator or None
        The matrix depends on the seed only, not on ``chunks``.

    Returns
    -------
    Problem

    Notes
    -----
    Every array is written with a NaN fill value: a chunk later deleted from the store is
    refused when the store is opened (its key is missing) and, if read anyway with
    ``allow_missing_chunks=True``, reads as NaN, which the first pass reports by rows.
    Chunks are compressed by zstd with its content checksum, so a truncated or altered
    chunk fails to decode (``CorruptChunkError`` naming it) instead of reading as other numbers.
    """
    import zarr

    m, n = int(m), int(n)
    if m < 1 or n < 1:
        raise ParameterError(f"m and n must be positive; got m={m}, n={n}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ParameterError(f"dtype must be float32 or float64; got {dtype}")
    if not 0.0 <= frac_in_range <= 1.0:
        raise ParameterError(f"frac_in_range must lie in [0, 1]; got {frac_in_range}")
    tall = m >= n
    if not tall and frac_in_range != 1.0:
        raise ParameterError("an underdetermined (m < n) problem is consistent: frac_in_range must be 1")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (--overwrite) to replace it")
    seed = resolve_seed(seed)
    # the long dimension is generated in row blocks of the tall factor T (= A or A.T)
    M, N = (m, n) if tall else (n, m)
    sv = np.asarray(s, dtype=float) if s is not None else singular_values(
        N, cond=cond, decay=decay, rank=rank, power=power, flat=flat)
    if sv.shape != (N,):
        raise ParameterError(f"s must have min(m, n)={N} values; got shape {sv.shape}")
    if np.any(sv < 0) or np.any(np.diff(sv) > 0):
        raise ParameterError("s must be non-negative and non-increasing")
    r = int(np.count_nonzero(sv))
    ch = _row_chunks(m, n, chunks, dtype.itemsize)
    G = Gaussian(d=N, m=M, seed=seed, stream=0, panel=4096)  # G.T is the M x N Gaussian factor
    rng = stream_generator(seed, 100, 0)
    V = np.linalg.qr(rng.standard_normal((N, N)))[0]
    step = ch[0] if tall else ch[1]
    step = max(step, 1)
    blocks = [(r0, min(M, r0 + step)) for r0 in range(0, M, step)]
    scale = np.sqrt(N)  # Gaussian panels are N(0, 1/N)

    def gblock(r0, r1):
        return G.columns(r0, r1).T * scale

    cache = {}

    def panelwise(r0, r1, F, tag):
        """F(p0, p1) for the 4096-row panels over [r0, r1), sliced: every product is formed on
        whole panels, so the rounding (and the matrix, bit for bit) does not depend on chunks."""
        out = []
        for q in range(r0 // 4096, (r1 - 1) // 4096 + 1):
            key = (tag, q)
            if key not in cache:
                cache.clear() if len(cache) > 4 else None
                p0 = q * 4096
                cache[key] = F(p0, min(M, p0 + 4096))
            p0 = q * 4096
            out.append(cache[key][max(r0, p0) - p0:min(r1, p0 + 4096) - p0])
        return np.concatenate(out)

    # pass 1: Gram matrix of G over fixed 4096-row panels, so it does not depend on chunks
    panels = [(r0, min(M, r0 + 4096)) for r0 in range(0, M, 4096)]
    bar = _bar(progress, len(panels) + 2 * len(blocks), "generate")
    gvec = Gaussian(d=1, m=M, seed=seed, stream=1, panel=4096)  # g ~ N(0, I) for the residual
    C = np.zeros((N, N))
    Gtg = np.zeros(N)
    gg = 0.0
    for r0, r1 in panels:  # also G.T g and ||g||^2, so U.T g = R^{-T} G.T g needs no pass of its own
        Gi = gblock(r0, r1)
        C += Gi.T @ Gi
        if tall:
            gi = gvec.columns(r0, r1)[0]
            Gtg += Gi.T @ gi
            gg += gi @ gi
        bar.update()
    Rinv = np.linalg.inv(np.linalg.cholesky(C).T)  # U = G R^{-1}, R upper triangular
    W = Rinv * sv @ V.T  # T_i = G_i R^{-1} diag(s) V.T

    # right-hand side pieces: y = s * (V.T x), b_range = U y; g ~ N(0, I) for the residual
    c = np.zeros(N)
    c[:r] = rng.standard_normal(r)
    x = V @ c  # in the row space (V[:, :r]) of T's column side
    with atomic_folder(path) as tmp:  # written beside path, fsync-ed, renamed into place
        grp = zarr.open_group(tmp, mode="w")
        codec = _zstd()
        zA = grp.create_array("A", shape=(m, n), chunks=ch, dtype=dtype, fill_value=np.nan, compressors=codec)
        Utg = Rinv.T @ Gtg
        for r0, r1 in blocks:  # pass 2: write A
            Ti = panelwise(r0, r1, lambda p0, p1: gblock(p0, p1) @ W, "T")
            if tall:
                zA[r0:r1, :] = Ti.astype(dtype)
            else:
                zA[:, r0:r1] = Ti.T.astype(dtype)
            bar.update()
        if tall:
            # A x = U (s * V.T x) = U (s * c)
            y = sv * c
            nrm_range = np.linalg.norm(y)
            if frac_in_range == 0.0:
                x[:] = 0.0
                y[:] = 0.0
                nrm_range = 0.0
            nperp2 = max(gg - Utg @ Utg, 0.0)
            if frac_in_range < 1.0:
                target = 1.0 if frac_in_range == 0.0 else nrm_range * np.sqrt(1 - frac_in_range**2) / frac_in_range
                alpha = target / np.sqrt(nperp2)
            else:
                alpha = 0.0

            def b_panel(p0, p1):
                Ui = gblock(p0, p1) @ Rinv
                bi = Ui @ y
                if alpha:
                    bi += alpha * (gvec.columns(p0, p1)[0] - Ui @ Utg)
                return bi

            zb = grp.create_array("b", shape=(m,), chunks=(ch[0],), dtype=dtype, fill_value=np.nan,
                                  compressors=codec)
            for r0, r1 in blocks:  # pass 3: b = U y + alpha (g - U U.T g)
                zb[r0:r1] = panelwise(r0, r1, b_panel, "b").astype(dtype)
                bar.update()
            norm_r = float(alpha * np.sqrt(nperp2))
            xs = x
        else:
            # A = (U s V.T).T = V s U.T; min-norm x lives in range(U): x = U c'. Choose b = A x
            # with x = U z, then A x = V (s * z); x is written block by block below.
            z = np.zeros(N)
            z[:r] = rng.standard_normal(r)
            zx = grp.create_array("x", shape=(n,), chunks=(ch[1],), dtype=np.float64, fill_value=np.nan,
                                  compressors=codec)
            for r0, r1 in blocks:
                zx[r0:r1] = panelwise(r0, r1, lambda p0, p1: gblock(p0, p1) @ Rinv @ z, "x")
                bar.update()
            b = V @ (sv * z)
            grp.create_array("b", shape=(m,), chunks=(m,), dtype=dtype, fill_value=np.nan,
                             compressors=codec)[...] = b.astype(dtype)
            norm_r = 0.0
            xs = None
        bar.close()
        if xs is not None:
            grp.create_array("x", shape=(n,), chunks=(n,), dtype=np.float64, fill_value=np.nan,
                             compressors=codec)[...] = xs
        grp.create_array("s", shape=(N,), chunks=(N,), dtype=np.float64, fill_value=np.nan,
                         compressors=codec)[...] = sv
        attrs = {"m": m, "n": n, "dtype": str(dtype), "seed": seed, "cond": float(sv[0] / sv[r - 1]),
                 "rank": r, "decay": decay if s is None else "given", "frac_in_range": frac_in_range,
                 "norm_r": norm_r, "chunks": list(ch), "generator": "distsketch.problems.generate_problem"}
        grp.attrs.update(attrs)
    return open_problem(path)


class _NoBar:
    def update(self, k=1):
        pass

    def close(self):
        pass


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="block")
