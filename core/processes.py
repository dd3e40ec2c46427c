"""Worker processes that end with the ulip2 process that started them.

A `kill -9` of `ulip2 index` gives its workers no chance to be told. Its loading pool's
workers (children of multiprocessing's forkserver, not of ulip2) each hold the pipes that
keep one another, the forkserver and the resource tracker waiting, so they lived on for
good; a Blender worker mid-render lived until its file was done.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def end_with(pid: int) -> None:
    """End this process as soon as process `pid` (the ulip2 process that started it) ends.
    Call early in the worker: a pool initializer, a worker's main.

    The kernel does it for a direct child (prctl PR_SET_PDEATHSIG, which holds even while
    Blender's C code runs); any other process watches a pidfd of `pid` from a thread. Where
    neither exists (not Linux) workers end when their pipes close."""
    if pid == os.getppid() and _LIBC is not None:
        if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != pid:  # it ended before the request took hold
                os._exit(1)
            return
    try:
        watched = os.pidfd_open(pid)
    except ProcessLookupError:  # it has already ended
        os._exit(1)
    except (AttributeError, OSError):  # no pidfds here
        return

    def watch() -> None:
        select.select([watched], [], [])  # readable once `pid` has ended
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()

