"""File > Settings: the model bundle, the device the encoder runs on, the library file (or
the studio's library server, its token file and path mapping), and the Blender that opens
assets."""

from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPushButton, QWidget)

DEVICES = ("auto", "cpu", "cuda")


class SettingsDialog(QDialog):
    def __init__(self, bundle: str, device: str, database: str, blender: str, parent=None, *,
                 server: str = "", token_file: str = "", path_map: str = ""):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.bundle = QLineEdit(bundle)
        self.bundle.setPlaceholderText("the bundle shipped with ulip2, or $ULIP2_BUNDLE")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(device if device in DEVICES else "auto")
        self.database = QLineEdit(database)
        self.server = QLineEdit(server)
        self.server.setPlaceholderText("none: the library file above; else e.g. http://assets-host:8765")
        self.server.setToolTip("The address `ulip2 serve` prints; searches and tags then go to the server")
        self.token_file = QLineEdit(token_file)
        self.token_file.setPlaceholderText("the file holding the server's token, for saving tags")
        self.path_map = QLineEdit(path_map)
        self.path_map.setPlaceholderText("/mnt/assets=S:\\  (the server's prefix = this machine's; ';' between)")
        self.blender = QLineEdit(blender)
        self.blender.setPlaceholderText("blender on PATH, else the usual install places")
        form = QFormLayout(self)
        form.addRow("Model bundle", self._with_browse(self.bundle, self._pick_bundle))
        form.addRow("Device", self.device)
        form.addRow("Library file", self._with_browse(self.database, self._pick_database))
        form.addRow("Library server", self.server)
        form.addRow("Server token file", self._with_browse(self.token_file, self._pick_token_file))
        form.addRow("Path mapping", self.path_map)
        form.addRow("Blender", self._with_browse(self.blender, self._pick_blender))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    @staticmethod
    def _with_browse(edit: QLineEdit, pick) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(edit)
        browse = QPushButton("Browse…")
        browse.clicked.connect(pick)
        layout.addWidget(browse)
        return row

    def _pick_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder", self.bundle.text())
        if folder:
            self.bundle.setText(folder)

    def _pick_database(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Library file", self.database.text(), "SQLite (*.sqlite)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.database.setText(path)

    def _pick_token_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Server token file", self.token_file.text())
        if path:
            self.token_file.setText(path)

    def _pick_blender(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Blender program", self.blender.text())
        if path:
            self.blender.setText(path)
