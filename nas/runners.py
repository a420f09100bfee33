"""Runners: where the search's candidates are evaluated, in this process or on Dask workers.

A runner takes an evaluator (`nas.evaluate`) and yields `(index, Outcome, attempts)` as each
candidate of a generation finishes. A candidate's own failure (an exception of its training or
building) becomes an `invalid` outcome and the search goes on; bad input (`InputError`: an
unreadable dataset, a search space the data cannot fill) stops the run with its error, as do
Ctrl-C and a dying interpreter.
"""

import atexit
import logging
import os
import signal
import time

from capsacc.errors import InputError

from nas.evaluate import Outcome, worker_name


def guarded(evaluator, genotype: list) -> Outcome:
    """Run the evaluator and time it (the outcome's seconds become the evaluation's whole wall time in
    its worker, model building and clean-up included). An exception of the candidate becomes an
    `invalid` outcome; `InputError` is raised on, since every other candidate would meet it too."""
    start = time.monotonic()
    try:
        outcome = evaluator(genotype)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - a candidate's failure must not stop the search
        outcome = Outcome("invalid", [], 0.0, 0, f"{type(error).__name__}: {error}", worker_name())
    outcome.seconds = time.monotonic() - start
    return outcome


class InProcessRunner:
    """Evaluates candidates one after the other in this process."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def run(self, genotypes: list[list]):
        """Yield (index, outcome, attempts) as each evaluation finishes."""
        for index, genotype in enumerate(genotypes):
            yield index, guarded(self.evaluator, genotype), 1

    def close(self) -> None:
        """Nothing to release."""


def _prepare_local_worker() -> None:
    """Set up a local worker process (run once on each, at start).

    It ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the search's own
    process handles it (it closes the cluster and exits 130 with one line); the workers would
    otherwise each print a KeyboardInterrupt traceback. And it ends with `os._exit` once it has
    closed: the interpreter's teardown with TensorFlow loaded takes seconds (4 s per worker
    measured on 2 cores), and closing the cluster waits for it. A worker that replaces a dead one
    keeps the defaults."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(os._exit, 0)


def _quiet_shutdown() -> None:
    """On a local worker about to be closed: log only errors of `distributed` (cancelled tasks)."""
    logging.getLogger("distributed").setLevel(logging.ERROR)


class DaskRunner:
    """Evaluates candidates on Dask workers: a local cluster of `workers` processes (one thread each,
    one intra-op thread per training) or an existing cluster at `scheduler`.

    Candidates are handed out in the order given, one per worker thread at a time: a worker that
    finishes gets the next one, so with the longest candidates first the workers finish a
    generation close together. A task whose worker dies is run once more
    (`distributed.scheduler.allowed-failures` = 1 for the local cluster); dying again it comes back
    as `lost`. An `InputError` raised on a worker is raised here."""

    def __init__(self, evaluator, workers: int = 2, scheduler: str | None = None):
        import dask
        from distributed import Client, LocalCluster
        self.evaluator = evaluator
        self.cluster = None
        if scheduler is None:
            with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
            self.client = Client(self.cluster)
            self.client.wait_for_workers(workers)
            self.client.run(_prepare_local_worker)
        else:
            try:
                self.client = Client(scheduler, timeout=30)
            except (OSError, TimeoutError, ValueError) as error:
                raise InputError(f"--scheduler {scheduler}: cannot connect ({error})") from None

    def run(self, genotypes: list[list]):
        """Yield (index, outcome, attempts) as each evaluation finishes, in any order."""
        from distributed import as_completed
        waiting = iter(enumerate(genotypes))
        futures = {}
        running = as_completed()

        def submit_next() -> None:
            item = next(waiting, None)
            if item is not None:
                future = self.client.submit(guarded, self.evaluator, item[1], retries=1, pure=False)
                futures[future] = item[0]
                running.add(future)

        for _ in range(max(1, sum(self.client.nthreads().values()))):
            submit_next()
        for future in running:
            submit_next()
            index = futures.pop(future)
            attempts = 1 + self._suspicious(future.key)
            try:
                outcome = future.result()
            except InputError:
                raise
            except Exception as error:  # noqa: BLE001 - KilledWorker and the like: the candidate is lost
                outcome = Outcome("lost", [], 0.0, 0, f"{type(error).__name__}: {error}", "")
                attempts = max(attempts, 2)
            future.release()
            yield index, outcome, attempts

    def _suspicious(self, key) -> int:
        """How many workers died while running task `key` (the scheduler's count)."""
        def count(dask_scheduler, key=key):
            task = dask_scheduler.tasks.get(key)
            return 0 if task is None else task.suspicious
        try:
            return int(self.client.run_on_scheduler(count))
        except Exception:  # noqa: BLE001 - an external scheduler may refuse `run_on_scheduler`
            return 0

    def close(self) -> None:
        """Close the client and the local cluster, if any (the local workers' notices about the
        tasks this cancels are silenced first: they would follow an interrupted run's one line)."""
        if self.cluster is not None:
            try:
                self.client.run(_quiet_shutdown)
            except Exception:  # noqa: BLE001 - a worker already gone needs no silencing
                pass
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_runner(evaluator, workers: int = 1, scheduler: str | None = None):
    """An `InProcessRunner` for one worker and no scheduler, a `DaskRunner` otherwise."""
    if workers > 1 or scheduler is not None:
        return DaskRunner(evaluator, workers, scheduler)
    return InProcessRunner(evaluator)
