"""Task: one core call on a QThreadPool thread, reporting through signals, so the window
never blocks. Errors become one readable line (the traceback goes to stderr for a bug
report, never to the window)."""

from __future__ import annotations

import sqlite3
import sys
import threading
import traceback

from PySide6.QtCore import QObject, QRunnable, Signal

from core.errors import Ulip2Error


class TaskSignals(QObject):
    # A QRunnable is not a QObject: its signals live on this companion, delivered to the
    # UI thread through queued connections.
    progress = Signal(int, int)  # done, total
    done = Signal(object)  # the call's return value
    failed = Signal(str)  # a readable message


class Task(QRunnable):
    """Runs fn(*args, **kwargs). With `reports=True` fn also gets on_batch (emits progress)
    and should_stop (True once cancel() was called), the indexer's hooks."""

    def __init__(self, fn, *args, reports: bool = False, **kwargs):
        super().__init__()
        self.signals = TaskSignals()
        self._stop = threading.Event()
        if reports:
            kwargs.update(on_batch=self.signals.progress.emit, should_stop=self._stop.is_set)
        self._call = lambda: fn(*args, **kwargs)

    def cancel(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            result = self._call()
        except Exception as exc:  # a worker that dies silently would leave the window waiting forever
            self.signals.failed.emit(readable_error(exc))
            return
        self.signals.done.emit(result)


def readable_error(exc: BaseException) -> str:
    """What a person can act on: ulip2's own errors say what to do; anything else is named
    as unexpected, with its traceback printed to stderr."""
    if isinstance(exc, Ulip2Error):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or 'file'}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.Error):
        return f"the library file could not be read or written ({exc})"
    traceback.print_exception(exc, file=sys.stderr)
    return f"unexpected {type(exc).__name__}: {exc} (details printed to the terminal)"
