"""Stop requests from signals (SIGINT, SIGTERM) that survive being raised in the wrong place.

Python runs a signal handler between bytecodes of the main thread, wherever it is: inside a
weakref finalizer or a `__del__` the exception it raises is printed as "Exception ignored" and
dropped, and the run would go on to the end. So the handler also records the request, and the
runner checks it after every stored step chunk: a stop is then at most one chunk late, never
lost."""

import signal
import sys
from typing import NamedTuple


_requested: type[BaseException] | None = None


def _stop_on(exception: type[BaseException]):
    def handler(signum, frame):
        global _requested
        _requested = exception
        raise exception

    return handler


class PreviousHandlers(NamedTuple):
    sigint: object
    sigterm: object
    unraisablehook: object


def install_stop_handlers(terminated: type[BaseException]) -> PreviousHandlers:
    """Handlers raising KeyboardInterrupt on SIGINT and `terminated` on SIGTERM, each recorded
    for `raise_if_stop_requested`; returns what they replace, for `restore_handlers`."""
    stops = (KeyboardInterrupt, terminated)
    report = sys.unraisablehook

    def hook(unraisable):
        # a recorded stop dropped in a finalizer: not an error to print, it is raised later
        if not (_requested is not None and issubclass(unraisable.exc_type, stops)):
            report(unraisable)

    previous = PreviousHandlers(
        sigint=signal.signal(signal.SIGINT, _stop_on(KeyboardInterrupt)),
        sigterm=signal.signal(signal.SIGTERM, _stop_on(terminated)),
        unraisablehook=report,
    )
    sys.unraisablehook = hook
    return previous


def restore_handlers(previous: PreviousHandlers) -> None:
    global _requested
    _requested = None
    signal.signal(signal.SIGINT, previous.sigint)
    signal.signal(signal.SIGTERM, previous.sigterm)
    sys.unraisablehook = previous.unraisablehook


def raise_if_stop_requested() -> None:
    """Raise a stop whose signal arrived where its exception could not propagate (at most once)."""
    global _requested
    exception, _requested = _requested, None
    if exception is not None:
        raise exception
