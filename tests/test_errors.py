"""The error and warning hierarchy: every class lives in distsketch/errors.py, is a DistsketchError
(or DistsketchWarning) and also a builtin, and the library raises them with messages that say what
was expected and what was received."""

import ast
import os
import warnings

import numpy as np
import pytest

import distsketch
from distsketch import errors

PKG = os.path.dirname(os.path.abspath(distsketch.__file__))


def test_every_error_is_also_a_builtin():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if name in ("DistsketchError", "DistsketchWarning"):
            continue
        if issubclass(cls, Warning):
            assert issubclass(cls, errors.DistsketchWarning) and issubclass(cls, UserWarning), name
        else:
            assert issubclass(cls, errors.DistsketchError), name
            builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException,
                                                                                          object)]
            assert builtin, f"{name} is not also a builtin exception"


def test_no_exception_class_is_defined_outside_errors_py():
    """Errors and warnings belong in errors.py (re-exported where users expect them)."""
    found = []
    for folder, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py") or os.path.join(folder, f) == os.path.join(PKG, "errors.py"):
                continue
            tree = ast.parse(open(os.path.join(folder, f)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Warning")):
                    found.append(f"{os.path.relpath(os.path.join(folder, f), PKG)}: {node.name}")
    assert found == []


def test_warnings_are_reexported_where_they_were():
    from distsketch import solve

    assert distsketch.ConvergenceWarning is solve.ConvergenceWarning is errors.ConvergenceWarning
    assert distsketch.IllConditionedWarning is solve.IllConditionedWarning is errors.IllConditionedWarning
    from distsketch.spectral import SourceError, SourceNotFoundError

    assert SourceError is errors.SourceError and SourceNotFoundError is errors.SourceNotFoundError


def test_convergence_warning_from_lstsq():
    """maxiter reached: lstsq warns with the errors.py class (a UserWarning) and says how to fix it."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((400, 20)) * np.logspace(0, 6, 20)
    b = rng.standard_normal(400)
    with pytest.warns(errors.ConvergenceWarning, match=r"reached maxiter=1 before its stopping test held"):
        res = distsketch.lstsq(A, b, method="sketch_precondition", maxiter=1, atol=1e-15, btol=1e-15, seed=0)
    assert not res.converged and res.istop == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", errors.DistsketchWarning)  # the base class silences every warning
        distsketch.lstsq(A, b, method="sketch_precondition", maxiter=1, atol=1e-15, btol=1e-15, seed=0)


def test_gram_factor_error_is_arithmetic_and_linalg():
    """A singular preconditioned Gram matrix: GramFactorError, caught as LinAlgError, ArithmeticError or
    DistsketchError alike (the bare LAPACK error never escapes)."""
    from distsketch.backends import as_rowdata
    from distsketch.solve._cholqr import gram_factor
    from distsketch.solve._precond import Precond

    A = np.random.default_rng(2).standard_normal((200, 6))
    A[:, 3] = 0.0  # N = I and a zero column: A.T A is singular
    for cls in (errors.GramFactorError, np.linalg.LinAlgError, ArithmeticError, errors.DistsketchError):
        with pytest.raises(cls, match=r"Gram matrix of A N \(N from the sketch, rank 6\) is not positive definite"):
            gram_factor(as_rowdata(A), None, Precond(R=np.eye(6)), 0.0)


def test_missing_model_is_file_not_found(tmp_path):
    from distsketch.spectral import analyze

    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors: no such file or folder") as info:
        analyze(tmp_path / "absent.safetensors")
    assert isinstance(info.value, errors.SourceNotFoundError) and isinstance(info.value, errors.SourceError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.SourceNotFoundError, match=r"empty: folder holds no \.safetensors"):
        analyze(tmp_path / "empty")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(errors.SourceError, match="unknown model format") as info:
        analyze(tmp_path / "w.txt")
    assert not isinstance(info.value, FileNotFoundError)  # it exists: a format error, a ValueError
    assert isinstance(info.value, ValueError)
