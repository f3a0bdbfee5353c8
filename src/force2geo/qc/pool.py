"""Process pools of single-threaded quantum-chemistry workers.

tblite and PySCF each use every core by default; many one-thread processes beat a few
multi-threaded ones on molecules of this size. The thread variables must be set before
a worker imports them, so they are set in the parent while the ``spawn`` children start
(they inherit the environment) and again in each worker.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.pool import Pool

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _init_worker() -> None:
    """One thread per worker; Ctrl-C is left to the parent, which ends the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"


def single_threaded_pool(processes: int) -> Pool:
    """A ``spawn`` pool of ``processes`` workers limited to one thread each."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))  # inherited by the children
    try:
        return multiprocessing.get_context("spawn").Pool(processes, initializer=_init_worker)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
