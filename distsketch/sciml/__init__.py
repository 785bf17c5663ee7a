"""Scientific ML: is a learned vector field an ODE? The convergence test for ODE-nets.

- :func:`convergence_test`: integrate a field with several explicit Runge-Kutta methods and
  step sizes, compare with a reference, report observed orders and a verdict
  (``"continuous"``, ``"discrete"``, ``"inconclusive"``) with its reason;
  :func:`convergence_tests` for many models (one Dask task per model and chunk).
- :func:`integrate`: fixed-step explicit Runge-Kutta on a batch of states, for numpy callables
  and torch modules (torch is imported only when a torch module is given).
- :class:`Tableau`, :func:`get_tableau`: Butcher tableaux (Euler, midpoint, Heun, RK4, the
  3/8 rule) and validated user tableaux.
"""

from ._convergence import ConvergenceResult, convergence_test, convergence_tests
from ._integrate import integrate
from ._tableau import TABLEAUX, Tableau, get_tableau

__all__ = ["convergence_test", "convergence_tests", "ConvergenceResult", "integrate", "Tableau", "TABLEAUX", "get_tableau"]
