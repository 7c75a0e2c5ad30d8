"""Progress for long runs: a tqdm bar with throughput and ETA, silent when not on a terminal."""

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, *, description: str, unit: str, enabled: bool | None = None):
    """A progress bar over `total` units. `enabled=None` shows it only on an interactive stderr."""
    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, disable=disable, leave=False
    )
