"""Run a module with every thread under cProfile; the merged stats go to $BENCH_PROFILE_OUT at exit.

    BENCH_PROFILE_OUT=web.prof python -m tests.bench.profiled uvicorn portal.asgi:application …

The throughput bench uses it for `--profile-web` / `--profile-worker` (a diagnosis, not a figure:
the profiler slows the process several times over). BENCH_PROFILE_CLOCK=cpu times each thread's
CPU (time.thread_time) instead of the wall clock: what a function costs the cores, without the
waits on the database or on the GIL. (Seen here: an idle pool thread's `SimpleQueue.get` and
`lock.acquire` still report long times under it; read past those two.)
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
import runpy
import signal
import sys
import threading
import time

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_thread_run = threading.Thread.run


def _new_profile() -> cProfile.Profile:
    if os.environ.get("BENCH_PROFILE_CLOCK") == "cpu":
        return cProfile.Profile(time.thread_time)
    return cProfile.Profile()


def _profiled_run(self) -> None:
    profile = _new_profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _thread_run(self)
    finally:
        profile.disable()


def _dump() -> None:
    stats = None
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        profile.disable()
        try:
            if stats is None:
                stats = pstats.Stats(profile)
            else:
                stats.add(profile)
        except TypeError:  # a profile that recorded nothing
            continue
    if stats is not None:
        stats.dump_stats(os.environ["BENCH_PROFILE_OUT"])


def _raise_signal_after_dump(signum) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown, which would skip atexit.
    _dump()
    _original_raise_signal(signum)


_original_raise_signal = signal.raise_signal


def main() -> None:
    threading.Thread.run = _profiled_run
    signal.raise_signal = _raise_signal_after_dump
    main_profile = _new_profile()
    _profiles.append(main_profile)
    atexit.register(_dump)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    main_profile.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
