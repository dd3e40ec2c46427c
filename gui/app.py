"""The QApplication, its remembered settings, and `ulip2 app`'s run (with --screenshot:
index, search, save the window, exit)."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication

from core.errors import Ulip2Error
from gui.main_window import DETAILS, MainWindow

ORGANIZATION = APPLICATION = "ulip2"
#: What Qt's xcb platform plugin (PySide6's libqxcb.so) links beyond what PySide6.QtGui has
#: loaded already, with the Debian/Ubuntu package of each: without one, Qt aborts the process
#: when the QApplication is made (exit 134), naming at most libxcb-cursor0.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-shape.so.0": "libxcb-shape0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1", "libxcb-util.so.1": "libxcb-util1", "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
}


def missing_libraries(libraries: Iterable[str]) -> list[str]:
    """The shared libraries among `libraries` (sonames) that this process cannot load."""
    missing = []
    for name in libraries:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def platform_is_xcb(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Qt would show windows through its xcb plugin: an X display, not Wayland, no other platform asked for."""
    return (sys.platform.startswith("linux") and bool(environ.get("DISPLAY")) and not environ.get("WAYLAND_DISPLAY")
            and environ.get("QT_QPA_PLATFORM", "") in ("", "xcb"))


def check_display() -> None:
    """Before the QApplication: on an X display, name the packages to install for whatever
    Qt's xcb plugin would not find, instead of letting Qt abort the process."""
    missing = missing_libraries(XCB_LIBRARIES) if platform_is_xcb() else []
    if missing:
        raise Ulip2Error(f"the desktop app cannot open windows on this X display without {', '.join(missing)}: "
                         f"sudo apt install {' '.join(XCB_LIBRARIES[name] for name in missing)} "
                         "(or run it headless with QT_QPA_PLATFORM=offscreen)")


def application() -> QApplication:
    """The process's QApplication (made once; tests and scripts may have made it already)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    return app


def settings() -> QSettings:
    """Where bundle, device, database and folders are remembered (the platform's usual place)."""
    return QSettings(ORGANIZATION, APPLICATION)


def run(args) -> int:
    check_display()
    app = application()
    window = MainWindow(settings(), folders=[str(p) for p in args.library] if args.library else None,
                        db=str(args.db) if args.db else None, bundle=str(args.bundle) if args.bundle else None,
                        device=args.device)
    if args.query:
        window.search_box.setText(args.query)
    window.show()
    if args.screenshot is not None:
        return _screenshot(app, window, args.screenshot, index=bool(window.folder_list()))
    if args.library:
        window.start_index()  # incremental: only new and changed files cost anything
    elif args.query:
        window.run_search()
    return app.exec()


def _screenshot(app: QApplication, window: MainWindow, out: Path, *, index: bool) -> int:
    """Index (when there are folders) then search, which an index run does on its own at
    the end, then grab the window once the best hit's details show. The picture is saved
    even after an error, which then shows in its status bar; the exit code says whether
    everything worked."""
    errors: list[str] = []

    def searched(results) -> None:
        if results is None:
            errors.append(window.statusBar().currentMessage())
        if window.jobs.running(DETAILS):  # the best hit's details are on their way
            window.details_shown.connect(settled, Qt.ConnectionType.SingleShotConnection)
        else:
            settled()

    def settled(*_) -> None:
        # Let the grid lay out and paint its icons before the grab.
        QTimer.singleShot(200, grab)

    def grab() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(out), "PNG"):
            errors.append(f"cannot write {out}")
        window.close()
        app.quit()

    window.search_finished.connect(searched)
    if index:
        window.index_finished.connect(lambda outcome: outcome is None and searched(None))
        QTimer.singleShot(0, window.start_index)
    else:
        QTimer.singleShot(0, window.run_search)
    app.exec()
    window.search_finished.disconnect(searched)
    if errors:
        raise Ulip2Error(f"screenshot saved to {out}, but: " + "; ".join(errors))
    print(out.resolve())
    return 0
