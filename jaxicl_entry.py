"""The `jaxicl` command's entry point, outside the package: importing jaxicl (JAX, XLA) takes
seconds, and an interrupt (Ctrl-C) while it loads should end in one line, not a traceback (a
KeyboardInterrupt inside an extension's initialisation surfaces as an ImportError or in a
garbage-collection callback). The interrupt is held until the import is done."""

import signal
import sys


def main() -> int:
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from jaxicl._cli import main as run
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("jaxicl: interrupted while starting; nothing was run.", file=sys.stderr)
        return 130
    return run()
