"""The ulip2 desktop app (PySide6): browse, index, search and tag asset libraries.

    cli.py          `ulip2 app` (light: Qt loads only when the command runs)
    app.py          QApplication, QSettings, the --screenshot run
    main_window.py  the window: folders, index progress, search, result grid, details
    models.py       ResultsModel, a QAbstractListModel over search hits
    workers.py      Task, a QRunnable that runs one core call off the UI thread
    jobs.py         the core calls the workers run (index, search, browse)

A surface over core.library: every result comes from core's indexer, searcher and store.
"""
