"""Stop requests from signals (SIGINT, SIGTERM) that survive being raised in the wrong place.

Python runs a signal handler between bytecodes of the main thread, wherever it is: inside a
weakref finalizer or a `__del__` the exception it raises is printed as "Exception ignored" and
dropped, and the run would go on to the end. So the handler also records the request, and the
runner checks it after every stored step chunk: a stop is then at most one chunk late, never
lost."""

import signal
import sys


_requested: type[BaseException] | None = None


def _stop_on(exception: type[BaseException]):
    def handler(signum, frame):
        global _requested
        _requested = exception
        raise exception

    return handler


def install_stop_handlers(terminated: type[BaseException]) -> dict:
    """Handlers raising KeyboardInterrupt on SIGINT and `terminated` on SIGTERM, each recorded
    for `raise_if_stop_requested`; returns the previous handlers for `restore_handlers`."""
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, _stop_on(KeyboardInterrupt)),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop_on(terminated)),
        "unraisablehook": sys.unraisablehook,
    }
    stops = (KeyboardInterrupt, terminated)
    report = sys.unraisablehook

    def hook(unraisable):
        # a recorded stop dropped in a finalizer: not an error to print, it is raised later
        if not (_requested is not None and issubclass(unraisable.exc_type, stops)):
            report(unraisable)

    sys.unraisablehook = hook
    return previous


def restore_handlers(previous: dict) -> None:
    global _requested
    _requested = None
    previous = dict(previous)
    sys.unraisablehook = previous.pop("unraisablehook")
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def raise_if_stop_requested() -> None:
    """Raise a stop whose signal arrived where its exception could not propagate (at most once)."""
    global _requested
    exception, _requested = _requested, None
    if exception is not None:
        raise exception
