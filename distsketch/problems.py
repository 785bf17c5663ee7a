"""Test problems written to Zarr block by block: prescribed singular values and known solutions.

``A = U diag(s) V.T`` with ``U`` (``m x n``) orthonormal and ``V`` (``n x n``) orthogonal;
``U`` is produced a row block at a time as ``G R^{-1}``, where ``G`` is a seeded
Gaussian (drawn like the Gaussian sketching operator's panels, so the matrix does not depend
on the chunking it is written with, but under an operator family of its own, so it shares no
draws with any sketch made with the same seed) and ``R`` the Cholesky factor of ``G.T G`` from a
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
    spec = _validate(path, m, n, cond=cond, decay=decay, rank=rank, power=power, flat=flat, s=s,
                     frac_in_range=frac_in_range, chunks=chunks, dtype=dtype, seed=seed, overwrite=overwrite)
    bar = _bar(progress, len(_spans(spec.M, PANEL)) + 2 * len(spec.blocks), "generate")
    try:
        gen = _Generator(spec, bar)  # pass 1: the Gram matrix of G (nothing written yet)
        with atomic_folder(spec.path) as tmp:  # written beside path, fsync-ed, renamed into place
            _write(tmp, spec, gen, bar)
    finally:
        bar.close()
    return open_problem(spec.path)


#: rows of the tall factor per panel: every product is formed on whole panels (and the
#: Gaussian's panels have this size), so the matrix is bit for bit the same for any chunking
PANEL = 4096


def _spans(total: int, step: int) -> list[tuple[int, int]]:
    return [(r0, min(total, r0 + step)) for r0 in range(0, total, step)]


@dataclass(frozen=True, eq=False)
class _Spec:
    """The validated arguments of :func:`generate_problem`. The tall factor ``T`` (``A``, or
    ``A.T`` when ``m < n``) is ``M x N`` and is generated in row blocks ``blocks`` (a chunk of
    ``A``'s rows, or of its columns for a wide ``A``)."""

    path: str
    m: int
    n: int
    dtype: np.dtype
    sv: np.ndarray
    decay: str
    frac_in_range: float
    chunks: tuple[int, int]
    seed: int

    @property
    def tall(self) -> bool:
        return self.m >= self.n

    @property
    def M(self) -> int:
        return max(self.m, self.n)

    @property
    def N(self) -> int:
        return min(self.m, self.n)

    @property
    def rank(self) -> int:
        return int(np.count_nonzero(self.sv))

    @property
    def blocks(self) -> list[tuple[int, int]]:
        return _spans(self.M, max(self.chunks[0] if self.tall else self.chunks[1], 1))

    def attrs(self, norm_r: float) -> dict:
        return {"m": self.m, "n": self.n, "dtype": str(self.dtype), "seed": self.seed,
                "cond": float(self.sv[0] / self.sv[self.rank - 1]), "rank": self.rank, "decay": self.decay,
                "frac_in_range": self.frac_in_range, "norm_r": norm_r, "chunks": list(self.chunks),
                "generator": "distsketch.problems.generate_problem"}


def _validate(path, m, n, *, cond, decay, rank, power, flat, s, frac_in_range, chunks, dtype, seed,
              overwrite) -> _Spec:
    """Every check of :func:`generate_problem`'s arguments, before any work."""
    m, n = int(m), int(n)
    if m < 1 or n < 1:
        raise ParameterError(f"m and n must be positive; got m={m}, n={n}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ParameterError(f"dtype must be float32 or float64; got {dtype}")
    if not 0.0 <= frac_in_range <= 1.0:
        raise ParameterError(f"frac_in_range must lie in [0, 1]; got {frac_in_range}")
    if m < n and frac_in_range != 1.0:
        raise ParameterError("an underdetermined (m < n) problem is consistent: frac_in_range must be 1")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (--overwrite) to replace it")
    N = min(m, n)
    sv = np.asarray(s, dtype=float) if s is not None else singular_values(
        N, cond=cond, decay=decay, rank=rank, power=power, flat=flat)
    if sv.shape != (N,):
        raise ParameterError(f"s must have min(m, n)={N} values; got shape {sv.shape}")
    if np.any(sv < 0) or np.any(np.diff(sv) > 0):
        raise ParameterError("s must be non-negative and non-increasing")
    return _Spec(path=path, m=m, n=n, dtype=dtype, sv=sv, decay=decay if s is None else "given",
                 frac_in_range=frac_in_range, chunks=_row_chunks(m, n, chunks, dtype.itemsize),
                 seed=resolve_seed(seed))


class _PanelCache:
    """Products ``F(p0, p1)`` over whole panels of the tall factor's rows, sliced to a row block.

    Keyed by ``(tag, panel index)``: a chunk boundary inside a panel reuses the panel's
    product instead of forming it again on fewer rows (which would round differently). At
    most ``keep + 1`` panels are held: blocks are visited in order, so older ones are not
    needed again.
    """

    def __init__(self, M: int, keep: int = 4):
        self.M, self.keep, self._store = M, keep, {}

    def rows(self, r0: int, r1: int, tag: str, F) -> np.ndarray:
        out = []
        for q in range(r0 // PANEL, (r1 - 1) // PANEL + 1):
            p0 = q * PANEL
            key = (tag, q)
            if key not in self._store:
                if len(self._store) > self.keep:
                    self._store.clear()
                self._store[key] = F(p0, min(self.M, p0 + PANEL))
            out.append(self._store[key][max(r0, p0) - p0:min(r1, p0 + PANEL) - p0])
        return np.concatenate(out)


class _ProblemGaussian(Gaussian):
    """The generator's Gaussian panels under a family no sketching operator uses.

    A panel's draws are keyed by (seed, family, stream, panel), not by the operator's row count:
    under the Gaussian family itself, ``G`` (rows of ``U``) would be the leading rows of
    ``sketch(A, d, kind="gaussian", seed=seed)`` for the problem's own seed, and that sketch of
    ``A = G R^{-1} diag(s) V.T`` would be ``G.T G``-amplified instead of an embedding
    (distortion ~ sqrt(m / d), not ~ sqrt(n / d))."""

    family = 101


class _Generator:
    """The problem's content as functions of row ranges of the tall factor ``T = U diag(s) V.T``.

    ``U = G R^{-1}`` with ``G`` the seeded Gaussian (``M x N``, unit variance) and ``R`` the
    Cholesky factor of ``G.T G``, formed in a first pass over fixed panels (constructor).
    For a tall ``A`` the same pass accumulates ``G.T g`` and ``||g||^2`` of the residual's
    Gaussian ``g``, so ``U.T g = R^{-T} G.T g`` needs no pass of its own:
    ``b = U y + alpha (g - U U.T g)`` with ``y = s * c``, ``x = V c``. For a wide ``A``
    (``T = A.T``) the minimum-norm ``x = U z`` and ``b = A x = V (s * z)``.
    """

    def __init__(self, spec: _Spec, bar):
        M, N, r = spec.M, spec.N, spec.rank
        self.spec, self.sv = spec, spec.sv
        self.G = _ProblemGaussian(d=N, m=M, seed=spec.seed, stream=0, panel=PANEL)  # G.T is the M x N factor
        self.gvec = _ProblemGaussian(d=1, m=M, seed=spec.seed, stream=1, panel=PANEL)  # g ~ N(0, I), the residual
        self.scale = np.sqrt(N)  # Gaussian panels are N(0, 1/N)
        self.cache = _PanelCache(M)
        rng = stream_generator(spec.seed, 100, 0)  # draws, in this order: V, c, then z (wide)
        self.V = np.linalg.qr(rng.standard_normal((N, N)))[0]
        C = np.zeros((N, N))
        Gtg = np.zeros(N)
        gg = 0.0
        for r0, r1 in _spans(M, PANEL):  # pass 1, over fixed panels so that C does not depend on chunks
            Gi = self.gblock(r0, r1)
            C += Gi.T @ Gi
            if spec.tall:
                gi = self.gvec.columns(r0, r1)[0]
                Gtg += Gi.T @ gi
                gg += gi @ gi
            bar.update()
        self.Rinv = np.linalg.inv(np.linalg.cholesky(C).T)  # U = G R^{-1}, R upper triangular
        self.W = self.Rinv * self.sv @ self.V.T  # T_i = G_i R^{-1} diag(s) V.T
        c = np.zeros(N)
        c[:r] = rng.standard_normal(r)
        self.x = self.V @ c  # in the row space of T (V[:, :r]): the minimum-norm solution when tall
        self.y = self.sv * c  # A x = U (s * c)
        self.z = None
        self.alpha = self.norm_r = 0.0
        if spec.tall:
            self._residual(Rinv_T_Gtg=self.Rinv.T @ Gtg, gg=gg)
        else:
            self.z = np.zeros(N)
            self.z[:r] = rng.standard_normal(r)

    def _residual(self, Rinv_T_Gtg, gg):
        """``alpha`` such that ``||A A^+ b|| = frac ||b||``; ``frac = 0`` makes ``x = 0``, ``b = g - U U.T g``."""
        frac = self.spec.frac_in_range
        self.Utg = Rinv_T_Gtg
        nrm_range = np.linalg.norm(self.y)
        if frac == 0.0:
            self.x[:] = 0.0
            self.y[:] = 0.0
            nrm_range = 0.0
        nperp2 = max(gg - self.Utg @ self.Utg, 0.0)  # ||g - U U.T g||^2
        if frac < 1.0:
            target = 1.0 if frac == 0.0 else nrm_range * np.sqrt(1 - frac**2) / frac
            self.alpha = target / np.sqrt(nperp2)
        self.norm_r = float(self.alpha * np.sqrt(nperp2))

    def gblock(self, r0, r1):
        return self.G.columns(r0, r1).T * self.scale

    def t_rows(self, r0, r1):
        """Rows ``[r0, r1)`` of ``T``."""
        return self.cache.rows(r0, r1, "T", lambda p0, p1: self.gblock(p0, p1) @ self.W)

    def b_rows(self, r0, r1):
        """Entries ``[r0, r1)`` of ``b`` (tall ``A``)."""
        def panel(p0, p1):
            Ui = self.gblock(p0, p1) @ self.Rinv
            bi = Ui @ self.y
            if self.alpha:
                bi += self.alpha * (self.gvec.columns(p0, p1)[0] - Ui @ self.Utg)
            return bi

        return self.cache.rows(r0, r1, "b", panel)

    def x_rows(self, r0, r1):
        """Entries ``[r0, r1)`` of the minimum-norm ``x = U z`` (wide ``A``)."""
        return self.cache.rows(r0, r1, "x", lambda p0, p1: self.gblock(p0, p1) @ self.Rinv @ self.z)

    def b_wide(self):
        return self.V @ (self.sv * self.z)


def _write(tmp: str, spec: _Spec, gen: _Generator, bar) -> None:
    """Passes 2 and 3: ``A`` (and ``b`` or ``x``, whichever is long) block by block, then the short arrays."""
    import zarr

    m, n, ch, dtype = spec.m, spec.n, spec.chunks, spec.dtype
    grp = zarr.open_group(tmp, mode="w")

    def create(name, shape, chunks, dt):
        return grp.create_array(name, shape=shape, chunks=chunks, dtype=dt, fill_value=np.nan, compressors=_zstd())

    zA = create("A", (m, n), ch, dtype)
    for r0, r1 in spec.blocks:  # pass 2: A
        Ti = gen.t_rows(r0, r1)
        if spec.tall:
            zA[r0:r1, :] = Ti.astype(dtype)
        else:
            zA[:, r0:r1] = Ti.T.astype(dtype)
        bar.update()
    if spec.tall:
        zb = create("b", (m,), (ch[0],), dtype)
        for r0, r1 in spec.blocks:  # pass 3: b = U y + alpha (g - U U.T g)
            zb[r0:r1] = gen.b_rows(r0, r1).astype(dtype)
            bar.update()
        create("x", (n,), (n,), np.float64)[...] = gen.x
    else:
        zx = create("x", (n,), (ch[1],), np.float64)
        for r0, r1 in spec.blocks:  # pass 3: x = U z
            zx[r0:r1] = gen.x_rows(r0, r1)
            bar.update()
        create("b", (m,), (m,), dtype)[...] = gen.b_wide().astype(dtype)
    create("s", (spec.N,), (spec.N,), np.float64)[...] = spec.sv
    grp.attrs.update(spec.attrs(gen.norm_r))


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
