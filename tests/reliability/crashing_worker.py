"""TEST-ONLY fault injection: `nowcast worker` that dies (`os._exit`) on a poison job.

Run as `python -m tests.reliability.crashing_worker`. It is the real worker in every respect, except
that a forecast asked for with seed `POISON_SEED` ends the process at once, without clean-up, the
way a segfault in a native library or the kernel's OOM killer would. Nothing in `service/` knows
about this: the hook wraps `NowcastPipeline.forecast_batch` in this process only.
"""

from __future__ import annotations

import functools
import os
import sys

# the seed that marks a job as poison; no other test uses it
POISON_SEED = 666_000_666
# exit status of a poisoned worker (EX_SOFTWARE), so logs tell it from a kill
CRASH_EXIT_CODE = 70
# `python -m` arguments of this worker, for `tests.support.cluster.Cluster(worker_command=...)`
CRASHING_WORKER = ("tests.reliability.crashing_worker",)


def install_crash_hook() -> None:
    """Make every `forecast_batch` holding a poison request end this process."""
    from models.pipeline import NowcastPipeline

    forecast_batch = NowcastPipeline.forecast_batch

    @functools.wraps(forecast_batch)
    def crash_on_poison(self, requests, on_step=None):  # noqa: ANN001, ANN202 - same as wrapped
        if any(request.seed == POISON_SEED for request in requests):
            sys.stderr.write(f"crashing_worker: poison job, os._exit({CRASH_EXIT_CODE})\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)
        return forecast_batch(self, requests, on_step)

    NowcastPipeline.forecast_batch = crash_on_poison


def main() -> int:
    install_crash_hook()
    from service.worker import main as worker_main

    return worker_main([])


if __name__ == "__main__":
    sys.exit(main())
