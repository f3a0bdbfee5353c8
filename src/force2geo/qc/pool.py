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
import time
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool

_NOTHING = object()  # no result within the flush interval
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


def run_tasks(worker: Callable, tasks: Sequence, workers: int, take: Callable,
              flush: Callable[[], None], flush_every: int = 16, flush_seconds: float = 30.0,
              progress: bool = True, unit: str = "task",
              postfix: Callable[[], dict] | None = None) -> None:
    """``worker(task)`` for every task in a :func:`single_threaded_pool`; the parent calls
    ``take(result)`` as results come back (in any order) and ``flush()`` after every
    ``flush_every`` results or ``flush_seconds``, whichever comes first; ``postfix()``, when
    given, adds counts to the progress bar. ``worker`` must be a module-level function (the
    pool pickles it); Ctrl-C or an error ends the pool."""
    if not tasks:
        return
    from tqdm import tqdm

    pool = single_threaded_pool(min(max(1, workers), len(tasks)))
    bar = tqdm(total=len(tasks), unit=unit, disable=not progress, dynamic_ncols=True)
    last_flush, unflushed = time.monotonic(), 0
    results = pool.imap_unordered(worker, tasks)
    try:
        while True:
            try:
                result = results.next(timeout=max(flush_seconds, 0.1))
            except multiprocessing.TimeoutError:
                result = _NOTHING
            except StopIteration:
                break
            if result is not _NOTHING:
                take(result)
                unflushed += 1
                if postfix is not None:
                    bar.set_postfix(postfix(), refresh=False)
                bar.update(1)
            if unflushed and (unflushed >= flush_every
                              or time.monotonic() - last_flush >= flush_seconds):
                flush()
                last_flush, unflushed = time.monotonic(), 0
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        bar.close()
