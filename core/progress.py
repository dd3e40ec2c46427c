"""One progress and cancellation protocol for long library work (index, thumbnails, triplets,
captions, features, training), so the command line, the desktop app and Blender each show
it their own way and library functions draw nothing.

A long function takes `on_progress(done, total)`, called before its first unit and after
each one it commits, and `should_stop()`, asked after each commit: True ends the work
there, with every committed unit kept, and the next run resumes with the rest. The command
line's face of it is `bar`, a tqdm bar on stderr driven by those calls; the desktop app's is
its job controller (gui.workers.Jobs: signals to the UI thread, cancel as should_stop).

Blender's operators (blender_addon/ui/progress.py) take the same facts as steps instead: a
generator of (done, total, message), since a modal operator must hand control back to
Blender's event loop between two steps; Esc there is should_stop, asked between two steps.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

#: (units done, units in all) after each committed unit; total may grow while work is found.
OnProgress = Callable[[int, int], None]
#: Asked after each committed unit; True stops the work there.
ShouldStop = Callable[[], bool]


def never() -> bool:
    return False


@contextlib.contextmanager
def bar(desc: str, unit: str, *, enabled: bool = True, status: Callable[[], str] | None = None) -> Iterator[OnProgress]:
    """An on_progress that draws a tqdm bar on stderr, from the first call with work to do
    (nothing at all when not `enabled`, or when there is nothing to do). status: asked at
    each call for a short text shown after the bar (a training run's loss)."""
    shown = None

    def update(done: int, total: int) -> None:
        nonlocal shown
        if not enabled or (shown is None and not total):
            return
        if shown is None:
            from tqdm import tqdm

            shown = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        if shown.total != total:
            shown.total = total
            shown.refresh()
        if status is not None:
            shown.set_postfix_str(status(), refresh=False)
        shown.update(done - shown.n)

    try:
        yield update
    finally:
        if shown is not None:
            shown.close()
