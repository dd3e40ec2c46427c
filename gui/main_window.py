"""The main window: library folders and indexing on the left, search and the result grid
in the middle, the selected asset's details on the right. Every core call runs as a job
of the window's Jobs (gui.workers), on a pool thread; the UI thread only shows what comes
back, and each kind of job below says only what to run and what to do with its outcome."""

from __future__ import annotations

import math
import os
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QSettings, QSize, QStringListModel, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QCompleter, QFileDialog, QFormLayout, QFrame, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QListView, QMainWindow, QMessageBox, QProgressBar,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from core.errors import Ulip2Error
from core.spaces.vocabularies import prompt_name
from gui import desktop, jobs, served
from gui.label_dialog import LabelDialog
from gui.models import HitRole, ResultsModel
from gui.settings_dialog import SettingsDialog
from gui.workers import Jobs


#: Image files a drop or the picker accepts as a query (what PIL, behind the space's image tower, reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_HINT = "Drop an image on the window to search by it"
#: The kinds of the window's jobs. A new search or selection supersedes the one before it;
#: tags saves, labelling and exports run in turn; one index and one thumbnail run at a time.
INDEX, THUMBNAILS, SEARCH, DETAILS, TAGS, LABELLING, EXPORT = (
    "index", "thumbnails", "search", "details", "tags", "labelling", "export")


def default_database() -> str:
    """$ULIP2_DB, else ulip2-library.sqlite in the app's data folder (not the current
    folder, which for a desktop app is wherever it was started from)."""
    from PySide6.QtCore import QStandardPaths

    from core.library.store import DB_ENV, DEFAULT_DB_NAME

    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return os.path.join(folder, DEFAULT_DB_NAME)


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plain_label(text: str = "") -> QLabel:
    """A QLabel that shows its text as written: file names, tags and captions are user data,
    and a label's default AutoText would draw `<font size=6>...` as markup."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


class MainWindow(QMainWindow):
    #: Emitted when an index run ends: its jobs.IndexOutcome, or None when it failed.
    index_finished = Signal(object)
    #: Emitted when a search ends: its jobs.Results, or None when it failed.
    search_finished = Signal(object)
    #: Emitted when tagging or captioning ends: (source name, assets labelled), or None when it failed.
    labelling_finished = Signal(object)
    #: Emitted when an export ends: the file written, or None when it failed.
    export_finished = Signal(object)
    #: Emitted when rendering thumbnails ends: core's ThumbnailReport, or None when it failed.
    thumbnails_finished = Signal(object)
    #: Emitted when the details pane shows the current asset: its jobs.Details, or None (no
    #: asset current, gone from the library, or its details could not be read).
    details_shown = Signal(object)
    #: Emitted when a person's tags are saved: the tags as stored, or None when it failed.
    tags_saved = Signal(object)

    def __init__(self, settings: QSettings, *, folders: list[str] | None = None, db: str | None = None,
                 bundle: str | None = None, device: str | None = None):
        """`settings` remembers bundle, device, database and folders; the keyword arguments
        override them for this window only (the command line's --library, --db, ...)."""
        super().__init__()
        self.settings = settings
        self.db = str(db or settings.value("database", "") or default_database())
        self.bundle = bundle or settings.value("bundle", "") or None  # None: core's default bundle
        self.device = device or settings.value("device", "auto")
        self.blender = settings.value("blender", "")  # "": found on PATH or in the usual places
        # A library server (`ulip2 serve`) instead of the file: its address, the file holding
        # its token (for tag writes) and how its paths map to this machine's.
        self.server_url = settings.value("server", "")
        self.server_token_file = settings.value("server_token_file", "")
        self.path_map = settings.value("path_map", "")
        self.server = None  # the LibraryClient while a server is set
        self.index_batch_size = 16  # files per committed batch: the granularity of cancel and resume
        self.index_workers: int | None = None  # loader processes (None: the indexer chooses by core count)
        self.blender_workers: int | None = None  # Blender processes rendering thumbnails (None: one per core)
        self.jobs = Jobs(self)
        self._details: jobs.Details | None = None
        # Whether a selection's details put its similarity in the status bar (not the best
        # hit a search makes current: the bar says what the search found).
        self._announce_similarity = True

        self.setWindowTitle("ulip2")
        self.resize(1180, 720)
        self.setAcceptDrops(True)  # an image dropped anywhere on the window is a query
        self._build_menu()
        splitter = QSplitter()
        splitter.addWidget(self._build_library_panel(folders))
        splitter.addWidget(self._build_results_panel())
        splitter.addWidget(self._build_details_panel())
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([250, 640, 290])
        self.setCentralWidget(splitter)
        QShortcut(QKeySequence.StandardKey.Find, self, activated=self.focus_search)
        self._show_details(None)
        self.statusBar().showMessage(f"Library file: {self.db}")
        self._connect()

    # -- layout --------------------------------------------------------------------------
    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&File")
        menu.addAction(QAction("Export &tags…", self, triggered=lambda: self.export(jobs.TAG)))
        menu.addAction(QAction("Export &captions…", self, triggered=lambda: self.export(jobs.CAPTION)))
        menu.addSeparator()
        menu.addAction(QAction("&Settings…", self, triggered=self.edit_settings))
        menu.addSeparator()
        menu.addAction(QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close))
        menu = self.menuBar().addMenu("&Library")
        self.label_actions = [QAction("&Tag assets…", self, triggered=lambda: self.ask_labelling(jobs.TAG)),
                              QAction("&Caption assets…", self, triggered=lambda: self.ask_labelling(jobs.CAPTION))]
        menu.addActions(self.label_actions)
        menu.addSeparator()
        self.thumbnail_action = QAction("Render thumbnails in &Blender", self, triggered=self.render_thumbnails)
        self.thumbnail_action.setStatusTip("Replace the point previews with Blender renders (resumes where it stopped)")
        menu.addAction(self.thumbnail_action)
        # Tagging has no batches to count (one matrix product after the texts are embedded):
        # a busy bar says it runs.
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(160)
        self.busy.hide()
        self.statusBar().addPermanentWidget(self.busy)

    def _build_library_panel(self, folders: list[str] | None) -> QWidget:
        box = QGroupBox("Library folders")
        layout = QVBoxLayout(box)
        remembered = self.settings.value("folders", []) or []
        if isinstance(remembered, str):  # QSettings gives a one-item list back as a string
            remembered = [remembered]
        self.folders = QStringListModel([os.path.abspath(f) for f in (folders or remembered)], self)
        self.folder_view = QListView()
        self.folder_view.setModel(self.folders)
        self.folder_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.folder_view.setTextElideMode(Qt.TextElideMode.ElideLeft)
        layout.addWidget(self.folder_view)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add…", clicked=self.pick_folder)
        self.remove_button = QPushButton("Remove", clicked=self.remove_folder)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        layout.addLayout(row)
        self.index_button = QPushButton("Index", clicked=self.start_index)
        self.index_button.setToolTip("Embed new and changed files; unchanged ones are skipped")
        layout.addWidget(self.index_button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m files")
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel_index)
        self.cancel_button.setEnabled(False)
        layout.addWidget(self.cancel_button)
        # The last run's outcome stays here; the status bar moves on to the search that follows.
        self.index_status = plain_label()
        self.index_status.setWordWrap(True)
        layout.addWidget(self.index_status)
        return box

    def _build_results_panel(self) -> QWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        row = QHBoxLayout()
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search by text (Ctrl+F, Enter to run; empty lists every asset)")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self.run_search)
        # Drag targets are found by walking up from the widget under the pointer to the first
        # that accepts drops: these would take an image's drag (as text, or for the model) and
        # keep it from the window, where it becomes a query.
        self.search_box.setAcceptDrops(False)
        row.addWidget(self.search_box)
        row.addWidget(QPushButton("Search", clicked=self.run_search))
        layout.addLayout(row)
        self.tag_filter = QLineEdit()
        self.tag_filter.setPlaceholderText("Only assets tagged… (comma-separated, all must match; Enter to apply)")
        self.tag_filter.setToolTip("Your tags and suggested tags both count")
        self.tag_filter.setClearButtonEnabled(True)
        self.tag_filter.setAcceptDrops(False)
        self.tag_filter.returnPressed.connect(self.run_search)
        self.tag_labels = QStringListModel(self)  # filled by every search with the library's labels
        completer = QCompleter(self.tag_labels, self.tag_filter)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.tag_filter.setCompleter(completer)
        layout.addWidget(self.tag_filter)
        row = QHBoxLayout()
        self._image_note = IMAGE_HINT  # what the drop zone says between image searches
        self.image_zone = plain_label(IMAGE_HINT)
        self.image_zone.setFrameShape(QFrame.Shape.StyledPanel)
        self.image_zone.setWordWrap(True)
        row.addWidget(self.image_zone, 1)
        self.image_button = QPushButton("Search by image…", clicked=self.pick_image)
        row.addWidget(self.image_button)
        layout.addLayout(row)
        self.results = ResultsModel(self)
        self.grid = QListView()
        self.grid.setModel(self.results)
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(128, 128))
        self.grid.setGridSize(QSize(150, 180))
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setWordWrap(True)
        self.grid.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.grid.setAcceptDrops(False)  # icon mode turns drops on, for moving items
        self.grid.selectionModel().currentChanged.connect(lambda current, _: self._show_details(current))
        self.grid.activated.connect(self.open_in_blender)  # Enter or double-click
        self.grid.setToolTip("Arrow keys move; Enter or double-click opens the asset in Blender")
        layout.addWidget(self.grid)
        # How many the grid shows of how many matched: it holds the first RESULTS_K only.
        self.count_label = plain_label()
        layout.addWidget(self.count_label)
        return panel

    def _build_details_panel(self) -> QWidget:
        box = QGroupBox("Details")
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.path_label, self.format_label, self.size_label = plain_label(), plain_label(), plain_label()
        self.suggested_label, self.caption_label = plain_label(), plain_label()
        for label in (self.path_label, self.suggested_label, self.caption_label):
            label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tags_edit = QLineEdit()
        self.tags_edit.setPlaceholderText("oak, hero prop")
        self.tags_edit.setToolTip("Comma-separated; Enter saves them to the library")
        self.tags_edit.returnPressed.connect(self.save_tags)
        self.save_tags_button = QPushButton("Save tags", clicked=self.save_tags)
        self.similar_button = QPushButton("Find similar", clicked=self.find_similar)
        self.reveal_button = QPushButton("Reveal in folder", clicked=self.reveal_in_folder)
        self.blender_button = QPushButton("Open in Blender", clicked=self.open_in_blender)
        self.blender_button.setToolTip("Opens a .blend, imports other formats into an empty scene (Enter in the grid)")
        form.addRow("Path", self.path_label)
        form.addRow("Format", self.format_label)
        form.addRow("Size", self.size_label)
        form.addRow("Your tags", self.tags_edit)
        form.addRow("", self.save_tags_button)
        form.addRow("Suggested tags", self.suggested_label)
        form.addRow("Caption", self.caption_label)
        form.addRow(self.similar_button)
        form.addRow(self.reveal_button)
        form.addRow(self.blender_button)
        return box

    # -- messages ------------------------------------------------------------------------
    def show_error(self, title: str, text: str, details: str = "") -> None:
        """A warning box that does not block the event loop (open(), not exec()), and the
        same line in the status bar."""
        self.statusBar().showMessage(f"{title}: {text}")
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # the text may hold file names
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _show_failures(self, title: str, summary: str, failed: list[dict]) -> None:
        """A warning naming the first failed file and its reason; every one under Details."""
        first = failed[0]
        self.show_error(title, f"{summary} First: {os.path.basename(first['path'])}: {first['reason']}",
                        "\n".join(f"{f['path']}: {f['reason']}" for f in failed))

    # -- folders -------------------------------------------------------------------------
    def folder_list(self) -> list[str]:
        return self.folders.stringList()

    def add_folder(self, folder: str) -> None:
        folder = os.path.abspath(folder)
        if folder not in self.folder_list():
            self.folders.setStringList(self.folder_list() + [folder])
            self.settings.setValue("folders", self.folder_list())

    def pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a library folder")
        if folder:
            self.add_folder(folder)

    def remove_folder(self) -> None:
        index = self.folder_view.currentIndex()
        if index.isValid():
            self.folders.removeRow(index.row())
            self.settings.setValue("folders", self.folder_list())

    # -- indexing ------------------------------------------------------------------------
    def start_index(self) -> None:
        if self.jobs.running(INDEX):
            return
        if not self._local_library("Cannot index"):
            self.index_finished.emit(None)
            return
        missing = [f for f in self.folder_list() if not os.path.exists(f)]
        if not self.folder_list() or missing:
            self.show_error("Cannot index", f"no such folder: {missing[0]}" if missing
                            else "add a library folder first (Add…)")
            self.index_finished.emit(None)
            return
        self.index_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the indexer knows how many files need work
        self.statusBar().showMessage("Indexing…")
        self.jobs.start(INDEX, jobs.run_index, self.folder_list(), self.db, self.bundle, self.device,
                        batch_size=self.index_batch_size, workers=self.index_workers,
                        progress=self._index_progress, done=self._index_done, failed=self._index_failed)

    def cancel_index(self) -> None:
        if self.jobs.cancel(INDEX):
            self.cancel_button.setEnabled(False)
            self.statusBar().showMessage("Cancelling after the current batch…")

    def _index_progress(self, done: int, total: int) -> None:
        # Nothing new or changed: a full bar that says so, not "0 / 0".
        self.progress.setFormat("%v / %m files" if total else "up to date")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done if total else 1)

    def _index_ended(self) -> None:
        self.index_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _index_done(self, outcome: jobs.IndexOutcome) -> None:
        self._index_ended()
        if outcome.cancelled:
            message = (f"Indexing cancelled: {outcome.done} of {outcome.total} files done; "
                       "press Index to resume with the rest")
        else:
            # Known bad files are skipped, not read again, but they are still not in the library.
            known = (f" ({outcome.known_errors} of them known from earlier runs, skipped until they change)"
                     if outcome.known_errors else "")
            message = (f"Indexed: {outcome.added} added, {outcome.updated} updated, {outcome.unchanged} unchanged, "
                       f"{outcome.removed} removed, {len(outcome.failed) + outcome.known_errors} could not be read"
                       f"{known}")
        self.index_status.setText(message)
        self.statusBar().showMessage(message)
        if outcome.failed:
            count = len(outcome.failed)
            self._show_failures("Some files were not indexed",
                                f"{count} file{'s' * (count > 1)} could not be indexed; the others were.", outcome.failed)
        self.index_finished.emit(outcome)
        self.run_search()  # show what is in the library now

    def _index_failed(self, message: str) -> None:
        self._index_ended()
        self.index_status.setText(f"Indexing failed: {message}")
        self.show_error("Indexing failed", message)
        self.index_finished.emit(None)

    # -- search --------------------------------------------------------------------------
    def focus_search(self) -> None:
        self.search_box.setFocus()
        self.search_box.selectAll()

    def run_search(self) -> None:
        self._search(text=self.search_box.text())

    def pick_image(self) -> None:
        pattern = " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(self, "Search by image", "", f"Images ({pattern})")
        if path:
            self.search_image(path)

    def search_image(self, path: str) -> None:
        self._search(image=path)

    @staticmethod
    def _dropped_image(event) -> str | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if len(urls) == 1 and urls[0].isLocalFile() and urls[0].toLocalFile().lower().endswith(IMAGE_SUFFIXES):
            return urls[0].toLocalFile()
        return None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_image(event):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = self._dropped_image(event)
        if path:
            event.acceptProposedAction()
            self.search_image(path)

    def find_similar(self) -> None:
        hit = self.current_hit()
        if hit is None:
            self.statusBar().showMessage("Select an asset to find similar ones")
            return
        self._search(like=hit.path if self.server is None else hit.asset_id)

    def _search(self, *, text: str = "", like: str | int | None = None, image: str | None = None) -> None:
        tags = [t.strip() for t in self.tag_filter.text().split(",") if t.strip()]
        if self.server is not None:
            what = text or (f"assets like {os.path.basename(image)}" if image else "similar assets")
            self.statusBar().showMessage(f"Searching {self.server_url} for {what}…")
            self.jobs.start(SEARCH, served.search, self.server, text=text, like=like, image=image, tags=tags,
                            done=lambda results: self._search_done(results, by_image=image is not None),
                            failed=self._search_failed)
            return
        if not Path(self.db).is_file():
            self.statusBar().showMessage("No library yet: add a folder and press Index")
            self.search_finished.emit(None)
            return
        query = like or image
        self.statusBar().showMessage(f"Searching for {query and os.path.basename(query) or text or 'every asset'}…")
        if image is not None:
            self.image_zone.setText(f"Searching by {os.path.basename(image)}…")
        self.jobs.start(SEARCH, jobs.run_search, self.db, self.bundle, self.device, text=text, like=like, image=image,
                        tags=tags, done=lambda results: self._search_done(results, by_image=image is not None),
                        failed=self._search_failed)

    def _set_image_note(self, text_only_space: str | None) -> None:
        """The drop zone's standing text: how to search by image, or why this space cannot."""
        self._image_note = IMAGE_HINT if text_only_space is None else (
            f"This model's space ({text_only_space}) has no image tower, so it cannot search by image; "
            "use an openclip bundle (File → Settings)")
        self.image_zone.setText(self._image_note)
        self.image_button.setEnabled(text_only_space is None)

    def _search_done(self, results: jobs.Results, *, by_image: bool = False) -> None:
        self.image_zone.setText(self._image_note)
        if results.image_tower is not None:
            self._set_image_note(None if results.image_tower else results.space)
        if by_image and not results.image_tower:  # the note says why; the grid keeps what it showed
            self.statusBar().showMessage(f"No image search in the {results.space} space")
            self.search_finished.emit(results)
            return
        self.results.set_results(results)
        self.tag_labels.setStringList(results.tag_labels)
        if results.hits:  # the best hit is current: its details show, the arrow keys start there
            self._announce_similarity = False
            try:
                self.grid.selectionModel().setCurrentIndex(self.results.index(0),
                                                           QItemSelectionModel.SelectionFlag.ClearAndSelect)
            finally:
                self._announce_similarity = True
        else:
            self._show_details(None)
        count = len(results.hits)
        shown = f"Showing {count} of {results.total}" if count < results.total else f"{count}"
        tagged = f" tagged {', '.join(results.tags)}" if results.tags else ""
        if results.query:
            message = f"{shown} results for “{results.query}”{tagged} ({results.space} space)"
            more = ", the best first; a tag filter narrows them"
        else:
            message = f"{shown} assets{tagged} in the library"
            more = ", the first by path; a search or a tag filter finds the rest"
        self.count_label.setText(message + (more if count < results.total else ""))
        self.statusBar().showMessage(message)
        self.search_finished.emit(results)

    def _search_failed(self, message: str) -> None:
        self.image_zone.setText(self._image_note)
        self.show_error("Search failed", message)
        self.search_finished.emit(None)

    # -- details and tags ----------------------------------------------------------------
    def current_hit(self):
        index = self.grid.currentIndex()
        return self.results.data(index, HitRole) if index.isValid() else None

    def select_path(self, path: str) -> bool:
        """Make the result with this path current (for scripts and tests); False if absent.
        Its details follow on the pool (details_shown says when they show)."""
        for row, hit in enumerate(self.results.results.hits):
            if hit.path == os.path.abspath(path):
                self.grid.selectionModel().setCurrentIndex(
                    self.results.index(row), QItemSelectionModel.SelectionFlag.ClearAndSelect)
                return True
        return False

    def _show_details(self, index, *, announce: bool | None = None) -> None:
        """Read the current asset's details (its rows only, by id) on the pool; until they
        come, the pane names the asset and offers nothing to act on. `announce`: put the
        hit's similarity in the status bar (by default, unless a search made it current)."""
        hit = self.results.data(index, HitRole) if index is not None and index.isValid() else None
        if hit is None:
            self.jobs.drop(DETAILS)  # what a selection before asked for is not shown now
            self._fill_details(None)
            return
        self._fill_details(None, loading=hit.path)
        announce = self._announce_similarity if announce is None else announce
        similarity = hit.score if announce and not math.isnan(hit.score) else None
        load = ((jobs.load_details, self.db, hit.asset_id, self.results.results.bundle_id) if self.server is None
                else (served.details, self.server, hit.asset_id))
        self.jobs.start(DETAILS, *load, done=lambda details: self._fill_details(details, similarity=similarity),
                        failed=self._details_failed)

    def _details_failed(self, message: str) -> None:
        self._fill_details(None)
        self.show_error("Cannot show the asset", message)

    def _fill_details(self, details: jobs.Details | None, *, similarity: float | None = None,
                      loading: str | None = None) -> None:
        """The pane shows `details`; None: no asset (or, with `loading`, the path of the one
        whose details are being read). `similarity`: said in the status bar too."""
        self._details = details
        for widget in (self.tags_edit, self.save_tags_button, self.similar_button, self.reveal_button,
                       self.blender_button):
            widget.setEnabled(details is not None)
        if details is None:
            for label in (self.format_label, self.size_label, self.suggested_label, self.caption_label):
                label.setText("—" if loading is None else "…")
            self.path_label.setText(loading or "—")
            self.tags_edit.clear()
            if loading is None:
                self.details_shown.emit(None)
            return
        self.path_label.setText(details.path)
        self.format_label.setText(details.format)
        self.size_label.setText(human_size(details.size))
        self.tags_edit.setText(", ".join(details.user_tags))
        self.suggested_label.setText(", ".join(f"{prompt_name(t)} ({s:.2f})" for t, s in details.suggested_tags)
                                     or "none yet (Library → Tag assets)")
        self.caption_label.setText(details.caption or "none yet (Library → Caption assets)")
        if similarity is not None:
            self.statusBar().showMessage(f"{os.path.basename(details.path)}: similarity {similarity:.3f}")
        self.details_shown.emit(details)

    def save_tags(self) -> None:
        """Replace the current asset's own tags with the field's, on the pool; saves run in
        the order they were asked for."""
        details = self._details
        if details is None:
            return
        save = jobs.save_user_tags if self.server is None else served.save_tags
        self.jobs.start(TAGS, save, self.db if self.server is None else self.server, details.asset_id,
                        self.tags_edit.text().split(","), queued=True, done=lambda saved: self._tags_saved(details, saved),
                        failed=self._tags_failed)

    def _tags_saved(self, details: jobs.Details, saved: list[str]) -> None:
        details.user_tags = saved
        hit = self.current_hit()
        if hit is not None and hit.asset_id == details.asset_id:
            if self.jobs.running(DETAILS):  # begun before this save committed, it may show the tags before it
                self._show_details(self.grid.currentIndex(), announce=False)
            elif self._details is not None and not self.jobs.running(TAGS):  # (else a later save follows)
                self._details.user_tags = saved
                self.tags_edit.setText(", ".join(saved))
        self.statusBar().showMessage(f"Saved {len(saved)} tag{'s' * (len(saved) != 1)} "
                                     f"for {os.path.basename(details.path)}")
        self.tags_saved.emit(saved)

    def _tags_failed(self, message: str) -> None:
        self.show_error("Tags not saved", message)
        self.tags_saved.emit(None)

    # -- handing the asset to the desktop ---------------------------------------------------
    def reveal_in_folder(self) -> None:
        if self._details is None:
            return
        argv = desktop.reveal_command(self._details.path)
        if argv is None:
            folder = QUrl.fromLocalFile(os.path.dirname(self._details.path))
            if not QDesktopServices.openUrl(folder):
                self.show_error("Cannot show the folder", f"no file manager answered; the folder is "
                                f"{os.path.dirname(self._details.path)}")
            return
        self._hand_over(argv, f"Showing {os.path.basename(self._details.path)} in its folder")

    def open_in_blender(self) -> None:
        if self._details is None:
            return
        try:
            argv = desktop.blender_command(desktop.find_blender(self.blender), self._details.path)
        except desktop.DesktopError as exc:
            self.show_error("Cannot open in Blender", str(exc))
            return
        self._hand_over(argv, f"Opening {os.path.basename(self._details.path)} in {argv[0]}")

    def _hand_over(self, argv: list[str], message: str) -> None:
        try:
            desktop.launch(argv)
        except desktop.DesktopError as exc:
            self.show_error("Cannot start it", str(exc))
            return
        self.statusBar().showMessage(message)

    # -- tagging, captioning, export ----------------------------------------------------
    def _local_library(self, title: str) -> bool:
        """True with a library file; with a server, says that this is the server machine's work."""
        if self.server is None:
            return True
        self.show_error(title, f"the library is served by {self.server_url}: index, tag, caption and render "
                               "thumbnails on the server's machine (ulip2 index / tag / caption / thumbnails "
                               "--db FILE), or set a library file in File → Settings")
        return False

    def _has_library(self) -> bool:
        if not self._local_library("Runs on the server"):
            return False
        if Path(self.db).is_file():
            return True
        self.show_error("No library yet", "add a folder and press Index first")
        return False

    def ask_labelling(self, kind: str) -> None:
        from core.spaces.vocabularies import DEFAULT_VOCABULARY, SHIPPED_BANK, VOCABULARIES

        if kind == jobs.TAG:
            dialog = LabelDialog("Tag assets", "vocabulary", VOCABULARIES, DEFAULT_VOCABULARY, 5, self)
        else:
            dialog = LabelDialog("Caption assets", "caption bank", (SHIPPED_BANK,), SHIPPED_BANK, 1, self)
        if dialog.exec() == LabelDialog.DialogCode.Accepted:
            self.label_assets(kind, dialog.source.currentText().strip(), dialog.k.value())

    def label_assets(self, kind: str, source: str, k: int) -> None:
        """Tag or caption every asset (core.library.tagging) on the pool; the details follow."""
        if not self._has_library():
            self.labelling_finished.emit(None)
            return
        for action in self.label_actions:
            action.setEnabled(False)
        self.busy.show()
        doing = "Tagging" if kind == jobs.TAG else "Captioning"
        self.statusBar().showMessage(f"{doing} every asset from {source}…")

        def done(outcome: tuple[str, int]) -> None:
            self._labelling_ended()
            self.statusBar().showMessage(f"{doing} done: {outcome[1]} assets from {outcome[0]}")
            self._show_details(self.grid.currentIndex())
            self.labelling_finished.emit(outcome)

        def failed(message: str) -> None:
            self._labelling_ended()
            self.show_error(f"{doing} failed", message)
            self.labelling_finished.emit(None)

        self.jobs.start(LABELLING, jobs.run_labelling, self.db, self.bundle, kind, source, k, queued=True,
                        done=done, failed=failed)

    def _labelling_ended(self) -> None:
        for action in self.label_actions:
            action.setEnabled(True)
        self.busy.hide()

    def export(self, kind: str) -> None:
        path, chosen = QFileDialog.getSaveFileName(self, f"Export {kind}s", f"{kind}s.csv",
                                                   "CSV (*.csv);;JSON (*.json)")
        if path:
            if not path.lower().endswith((".csv", ".json")):
                path += ".json" if chosen.startswith("JSON") else ".csv"
            self.export_to(kind, path)

    def export_to(self, kind: str, path: str) -> None:
        """Write every asset's tags or captions to `path` (.csv or .json) with core's exporter."""
        if not self._has_library():
            self.export_finished.emit(None)
            return

        def done(count: int) -> None:
            self.statusBar().showMessage(f"Wrote the {kind}s of {count} assets to {path}")
            self.export_finished.emit(path)

        def failed(message: str) -> None:
            self.show_error("Export failed", message)
            self.export_finished.emit(None)

        self.jobs.start(EXPORT, jobs.export_labels, self.db, self.bundle, kind, path, queued=True,
                        done=done, failed=failed)

    # -- thumbnails ----------------------------------------------------------------------
    def render_thumbnails(self) -> None:
        """Blender renders for the assets that have point previews (core's `ulip2 thumbnails`),
        on the pool with a counting bar; the grid shows them when it ends."""
        if self.jobs.running(THUMBNAILS):
            return
        if not self._has_library():
            self.thumbnails_finished.emit(None)
            return
        self.thumbnail_action.setEnabled(False)
        self.busy.show()
        self.statusBar().showMessage("Rendering thumbnails in Blender…")
        self.jobs.start(THUMBNAILS, jobs.run_thumbnails, self.db, workers=self.blender_workers,
                        progress=self._thumbnail_progress, done=self._thumbnails_done, failed=self._thumbnails_failed)

    def _thumbnail_progress(self, done: int, total: int) -> None:
        self.busy.setRange(0, max(total, 1))
        self.busy.setValue(done if total else 1)
        self.busy.setFormat("%v / %m thumbnails")

    def _thumbnails_ended(self) -> None:
        self.thumbnail_action.setEnabled(True)
        self.busy.hide()
        self.busy.setRange(0, 0)  # back to the busy bar tagging shows

    def _thumbnails_done(self, report) -> None:
        self._thumbnails_ended()
        message = (f"Thumbnails: {report.rendered} rendered in Blender"
                   + (", stopped (run it again to resume)" if report.cancelled else ""))
        self.statusBar().showMessage(message)
        if report.failed:
            count = len(report.failed)
            self._show_failures("Some thumbnails were not rendered",
                                f"{count} file{'s' * (count > 1)} kept their point previews.", report.failed)
        self.thumbnails_finished.emit(report)
        self.run_search()  # show the new thumbnails

    def _thumbnails_failed(self, message: str) -> None:
        self._thumbnails_ended()
        self.show_error("Rendering thumbnails failed", message)
        self.thumbnails_finished.emit(None)

    # -- settings and closing ------------------------------------------------------------
    def _connect(self) -> bool:
        """The client of the server the settings name (None without one); False, said, when
        the settings cannot work (a bad address, token file or mapping)."""
        self.server = None
        if not self.server_url:
            return True
        try:
            self.server = served.connect(self.server_url, self.server_token_file, self.path_map)
        except Ulip2Error as exc:
            self.show_error("Cannot use the library server", str(exc))
            return False
        self.statusBar().showMessage(f"Library server: {self.server_url}")
        return True

    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.bundle or "", self.device, self.db, self.blender, self,
                                server=self.server_url, token_file=self.server_token_file, path_map=self.path_map)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return
        self.bundle = dialog.bundle.text().strip() or None
        self.device = dialog.device.currentText()
        self.db = dialog.database.text().strip() or default_database()
        self.blender = dialog.blender.text().strip()
        self.server_url = dialog.server.text().strip()
        self.server_token_file = dialog.token_file.text().strip()
        self.path_map = dialog.path_map.text().strip()
        for key, value in (("bundle", self.bundle or ""), ("device", self.device), ("database", self.db),
                           ("blender", self.blender), ("server", self.server_url),
                           ("server_token_file", self.server_token_file), ("path_map", self.path_map)):
            self.settings.setValue(key, value)
        self._connect()
        self.results.set_results(jobs.Results([]))
        self._show_details(None)
        self._set_image_note(None)  # another bundle, maybe another space: known again after a search
        self.run_search()

    def closeEvent(self, event) -> None:
        # An index or thumbnail run stops after its current batch or file (committed, so the next run resumes);
        # waiting for it here means no worker outlives the window.
        self.jobs.stop()
        self.settings.sync()
        super().closeEvent(event)
