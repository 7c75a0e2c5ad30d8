"""Joining a distributed sweep (`jax.distributed`): say what is awaited, and give up cleanly.

JAX's own timeout ends the process with a C++ abort and a stack dump; a watchdog ends it first,
with one line that says which processes did not come and what to do.
"""

import os
import sys
import threading

import jax

from .. import _validation as check


def join_processes(coordinator: str, num_processes, process_id, *, timeout: float) -> None:
    """`jax.distributed.initialize`, waiting at most `timeout` seconds for every process."""
    if num_processes is None or process_id is None:
        raise ValueError(
            "`--coordinator` needs `--num-processes` (how many processes) and `--process-id` "
            "(this one's index, 0 to num_processes - 1)."
        )
    check.positive_int("num_processes", num_processes)
    check.nonnegative_int("process_id", process_id)
    if process_id >= num_processes:
        raise ValueError(
            f"`process_id` must be below `num_processes` ({num_processes}), got {process_id}."
        )
    check.finite_positive("connect_timeout", timeout)
    print(
        f"jaxicl: process {process_id} of {num_processes}: waiting up to {timeout:g} s for all "
        f"{num_processes} processes to connect to {coordinator} ...",
        file=sys.stderr,
        flush=True,
    )

    def give_up():
        print(
            f"jaxicl: error: not all {num_processes} processes connected to {coordinator} within "
            f"{timeout:g} s; start the missing ones (same command, each with its own "
            "`--process-id`) or raise `--connect-timeout`.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)  # the main thread is blocked inside JAX's client: no unwinding possible

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(timeout) + 60,
        )
    finally:
        watchdog.cancel()
