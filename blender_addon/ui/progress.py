"""Long work in small steps, with Blender's progress and Esc to stop.

An operator built on StepOperator gives `begin(context)`, which checks its inputs and
returns a generator of (done, total, message) steps, and `end(context, stopped)`, which
reports. Run from the UI (invoke), it is modal: one step per timer tick, so Blender
stays responsive, the status bar shows the step and the window manager's progress the
share done, and Esc stops between two steps. Run from a script or headless (execute),
the steps run at once with the window manager's progress. Either way the operator ends
with FINISHED, so what it changed, up to a stop, is one undo step.
"""

from __future__ import annotations

import bpy

from core.errors import Ulip2Error

# Seconds between timer ticks: short, since each tick does one step of real work.
TICK_S = 0.01


class StepOperator:
    """Mix-in for bpy.types.Operator subclasses (see the module's docstring)."""

    def begin(self, context):
        raise NotImplementedError

    def end(self, context, stopped: bool) -> None:
        raise NotImplementedError

    def _start(self, context) -> bool:
        try:
            self._steps = self.begin(context)
        except Ulip2Error as exc:
            self.report({"ERROR"}, str(exc))
            return False
        self._stopped = False
        context.window_manager.progress_begin(0.0, 1.0)
        return True

    def _advance(self, context) -> bool:
        """One step; False when the steps are over (or failed, which is reported)."""
        try:
            done, total, message = next(self._steps)
        except StopIteration:
            return False
        except Ulip2Error as exc:
            self.report({"ERROR"}, str(exc))
            return False
        context.window_manager.progress_update(done / total if total else 0.0)
        if context.workspace is not None:
            context.workspace.status_text_set(f"ulip2: {message} ({done + 1} of {total}); Esc to stop")
        return True

    def _finish(self, context) -> set:
        self._steps.close()
        context.window_manager.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self.end(context, self._stopped)
        return {"FINISHED"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        while self._advance(context):
            pass
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(TICK_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._stopped = True
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        elif self._advance(context):
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context)
