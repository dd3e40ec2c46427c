"""Library → Tag assets / Caption assets: where the labels come from (one of core's shipped
vocabularies or caption banks, or a text file of one's own) and how many each asset gets."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QPushButton, QSpinBox, QWidget)


class LabelDialog(QDialog):
    def __init__(self, title: str, what: str, shipped: Sequence[str], default: str, k: int, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.what = what
        self.source = QComboBox()
        self.source.setEditable(True)  # a shipped name, or the path of a text file, one entry a line
        self.source.addItems(list(shipped))
        self.source.setCurrentText(default)
        self.source.setToolTip(f"A shipped {what}, or a text file with one entry a line (Browse…)")
        self.k = QSpinBox()
        self.k.setRange(1, 50)
        self.k.setValue(k)
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.source, 1)
        layout.addWidget(QPushButton("Browse…", clicked=self._pick_file))
        form = QFormLayout(self)
        form.addRow(what.capitalize(), row)
        form.addRow("Per asset", self.k)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"A {self.what} file, one entry a line", "",
                                              "Text (*.txt);;All files (*)")
        if path:
            self.source.setCurrentText(path)
