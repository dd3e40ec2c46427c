"""The ulip2 desktop app (PySide6): browse, index, search and tag asset libraries.

    cli.py          `ulip2 app` (light: Qt loads only when the command runs)
    app.py          QApplication, QSettings, the --screenshot run
    main_window.py  the window: folders, index progress, search (text, image, example, tag
                    filter), result grid, details, tagging, captioning, export
    models.py       ResultsModel, a QAbstractListModel over search hits
    workers.py      Jobs, the window's one job controller: core calls on a thread pool,
                    outcomes on the UI thread, a superseded search or selection dropped
    jobs.py         the core calls the jobs run (index, search, browse, details, tags, tag,
                    caption, export)
    desktop.py      the commands that reveal an asset in its folder and open it in Blender
    label_dialog.py Library → Tag / Caption assets: vocabulary or caption bank, labels per asset
    settings_dialog.py  File → Settings

A surface over core.library: every result comes from core's indexer, searcher and store.
"""
