"""The QApplication, its remembered settings, and `ulip2 app`'s run (with --screenshot:
index, search, save the window, exit)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from core.errors import Ulip2Error
from gui.main_window import MainWindow

ORGANIZATION = APPLICATION = "ulip2"


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
    the end, then grab the window. The picture is saved even after an error, which then
    shows in its status bar; the exit code says whether everything worked."""
    errors: list[str] = []

    def searched(results) -> None:
        if results is None:
            errors.append(window.statusBar().currentMessage())
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
