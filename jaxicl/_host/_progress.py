"""Progress for long runs: a tqdm bar with throughput and ETA, silent when not on a terminal;
or, for logs (`"lines"`: what the command line asks for off a terminal), one line per stored
step chunk, written by the runner."""

import sys
import time


def progress_mode(quiet: bool) -> bool | str | None:
    """What the command line asks for: nothing when quiet, a bar on a terminal, and off one
    (a batch job's log) a line per stored step chunk."""
    if quiet:
        return False
    return None if sys.stderr.isatty() else "lines"


class ProgressLines:
    """One line on stderr at the start of a sweep into a store (new or resuming, and what is
    done) and one per stored step chunk, with the time since the start."""

    def __init__(self, where: str, done: int, total: int):
        self.where, self.done, self.total = where, done, total
        self.start = time.monotonic()
        state = f"resuming: {done} of {total} step chunks done" if done else "new"
        self.say(f"{state}; {total - done} step chunk(s) to run")

    def say(self, text: str) -> None:
        print(f"jaxicl: {self.where}: {text}", file=sys.stderr, flush=True)

    def chunk_stored(self, unit: int, chunk: int) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        self.say(
            f"unit {unit} step chunk {chunk} stored ({self.done}/{self.total}, {elapsed:.0f} s)"
        )


from tqdm.auto import tqdm


def progress_bar(total: int, *, description: str, unit: str, enabled: bool | str | None = None):
    """A progress bar over `total` units. `enabled=None` shows it only on an interactive stderr;
    `"lines"` shows none (the runner writes lines instead)."""
    disable = (not sys.stderr.isatty()) if enabled is None else enabled is not True
    return tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, disable=disable, leave=False
    )
