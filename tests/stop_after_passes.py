#!/usr/bin/env python
"""Test hook: run an MPI driver and hard-exit every rank once N passes over A have completed,
as a scheduler's time limit would (no clean-up: checkpoints stay for the next job).

    mpiexec -n P python tests/stop_after_passes.py N drivers/lstsq.py ARGS...

The hook lives here, not in the drivers: it patches ``MPIRowData.row_pass`` and then runs the
driver as ``__main__``.
"""

import os
import runpy
import sys

from distsketch.mpi import MPIRowData


def stop_after(n_passes: int) -> None:
    real = MPIRowData.row_pass

    def row_pass(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.passes >= n_passes:
            sys.stderr.write(f"[rank {self.comm.rank}] stopping after pass {self.passes} (test hook)\n")
            sys.stderr.flush()
            os._exit(137)
        return out

    MPIRowData.row_pass = row_pass


if __name__ == "__main__":
    n, driver = int(sys.argv[1]), sys.argv[2]
    stop_after(n)
    sys.argv = [driver, *sys.argv[3:]]
    runpy.run_path(driver, run_name="__main__")
