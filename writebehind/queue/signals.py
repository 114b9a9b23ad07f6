"""drain_on_signals(): turn SIGTERM into a normal exit, so that the exit hook drains the queues.

A process killed by a signal's default action runs no Python code: the exit hook in
``_lifecycle`` never runs and the rows in memory are lost. Raising SystemExit in the main thread
instead unwinds it like ``sys.exit()``: ``finally`` blocks run, then the exit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType

from . import lifecycle  # noqa: F401  its exit hook is registered before ours (atexit is LIFO)

__all__ = ["drain_on_signals"]

logger = logging.getLogger("writebehind")

_UNCATCHABLE = frozenset(
    getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)

_exiting = False  # set by an exit hook that runs before the drain: a signal then must not cut it
_hooks_registered = False


def drain_on_signals(
    signals: Iterable[signal.Signals | int] = (signal.SIGTERM,),
) -> tuple[signal.Signals, ...]:
    """Make ``signals`` (default: SIGTERM) end this process with a normal exit that drains.

    For each signal whose handler is the default action (``SIG_DFL``: the process dies, nothing
    is written), install a handler that raises ``SystemExit(128 + signum)`` in the main thread
    (exit status 143 for SIGTERM, the shell's convention): ``finally`` blocks run, then the exit
    hook drains every queue within its ``shutdown_timeout``. Opt-in, and only where nobody else
    has a say: a signal with a handler of the application's or its server's (a Python function,
    ``SIG_IGN``, or one installed outside Python) is left alone and logged at INFO. gunicorn and
    uWSGI workers handle SIGTERM themselves (uWSGI's shows as ``SIG_IGN``): it does nothing there.

    Returns the signals that end in a drain after the call: those installed now and those
    installed by an earlier call (calling it again changes nothing and returns them again).

    - The first signal restores the default action before it raises, so that a second one kills
      at once: an operator who sends it twice means it, and a supervisor's grace period ends in
      SIGKILL anyway. A signal that arrives while the exit hook is already draining (the process
      was ending by itself) lets the drain go on, and also restores the default action.
    - The handler runs in the main thread between two bytecodes, like ``KeyboardInterrupt``: a
      ``put()`` it interrupts may or may not have accepted its row, and an ``except
      BaseException`` (or bare ``except``) that swallows SystemExit keeps the process running.
    - A child forked afterwards starts with the default action again: call this in the child to
      opt it in too (a ``multiprocessing`` pool's ``terminate()`` still kills its workers).
    - On Windows another process cannot deliver SIGTERM (``TerminateProcess`` ends the process
      at once): installing it is harmless and drains only on ``signal.raise_signal``. Signals
      absent from the platform are absent from the ``signal`` module; pass only those it has.

    Raises TypeError unless ``signals`` is an iterable of ``signal.Signals`` (or their numbers),
    ValueError for a number that is no signal here or for SIGKILL/SIGSTOP (which cannot be
    caught), and RuntimeError outside the main thread (Python installs and runs signal handlers
    there only). Nothing is installed when it raises.
    """
    wanted = _checked(signals)
    current = threading.current_thread()
    if current is not threading.main_thread():
        raise RuntimeError(
            "drain_on_signals() must be called from the main thread: Python installs and runs "
            f"signal handlers there only (called from thread {current.name!r})"
        )
    _register_hooks()
    draining: list[signal.Signals] = []
    for sig in wanted:
        handler = signal.getsignal(sig)
        if handler is _exit_on_signal:
            draining.append(sig)
        elif handler == signal.SIG_DFL:
            signal.signal(sig, _exit_on_signal)
            logger.debug("%s now exits normally, draining the queues", sig.name)
            draining.append(sig)
        else:
            logger.info("%s left alone: %s", sig.name, _describe(handler))
    return tuple(draining)


def _checked(signals: object) -> tuple[signal.Signals, ...]:
    if isinstance(signals, (int, str, bytes)) or not isinstance(signals, Iterable):
        raise TypeError(
            "signals must be an iterable of signal.Signals, e.g. (signal.SIGTERM,); "
            f"got {signals!r}"
        )
    found: list[signal.Signals] = []
    for item in signals:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(
                f"signals must hold signal.Signals, got {item!r} ({type(item).__name__})"
            )
        try:
            sig = signal.Signals(item)
        except ValueError:
            raise ValueError(f"signals: {item!r} is not a signal on this platform") from None
        if sig in _UNCATCHABLE:
            raise ValueError(f"signals: {sig.name} cannot be caught, so it cannot drain")
        if sig not in found:
            found.append(sig)
    return tuple(found)


def _describe(handler: object) -> str:
    if handler == signal.SIG_IGN:
        return "the application ignores it (SIG_IGN)"
    if handler is signal.default_int_handler:
        return "Python's default handler raises KeyboardInterrupt, which exits normally and drains"
    if handler is None:
        owner = "a handler installed outside Python (by the host server)"
    else:
        owner = f"the application's handler {getattr(handler, '__qualname__', repr(handler))}"
    return f"{owner}; the queues drain if it ends the process with a normal exit"


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one kills at once
    name = signal.Signals(signum).name
    if _exiting:
        _log("%s received while the exit hook drains: draining goes on; a second one kills", name)
        return
    _log("%s received: exiting with status %d, draining the queues", name, 128 + signum)
    raise SystemExit(128 + signum)


def _log(message: str, *args: object) -> None:
    # The signal may have interrupted a write to the same stream (a reentrant write raises
    # RuntimeError): the exit matters more than the message.
    with contextlib.suppress(Exception):
        logger.warning(message, *args)


def _mark_exiting() -> None:
    global _exiting
    _exiting = True


def _forked_child() -> None:
    # The opt-in is the calling process's: a forked child dies on the signal as before, unless
    # it calls drain_on_signals() itself.
    global _exiting
    _exiting = False
    for sig in signal.Signals:
        if signal.getsignal(sig) is _exit_on_signal:
            signal.signal(sig, signal.SIG_DFL)


def _register_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_mark_exiting)  # registered after the drain, so it runs before it
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forked_child)
