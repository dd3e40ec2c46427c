"""ResultsModel: the result grid's QAbstractListModel over a search's hits."""

from __future__ import annotations

import html
import math
import os

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt
from PySide6.QtGui import QIcon, QPixmap

from gui.jobs import Results

#: Role of a hit's core.library.search.Hit.
HitRole = Qt.ItemDataRole.UserRole + 1


class ResultsModel(QAbstractListModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.results = Results([])
        self._icons: dict[int, QIcon] = {}  # made on first display, not per search

    def set_results(self, results: Results) -> None:
        self.beginResetModel()
        self.results = results
        self._icons.clear()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.results.hits)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.results.hits):
            return None
        hit = self.results.hits[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            name = os.path.basename(hit.path)
            return name if math.isnan(hit.score) else f"{name}\n{hit.score:.3f}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icon(hit.asset_id)
        if role == Qt.ItemDataRole.ToolTipRole:
            # Tooltips guess rich text from what they are given: escape the path, so a file
            # name with markup in it shows as written.
            text = hit.path if math.isnan(hit.score) else f"{hit.path}\nsimilarity {hit.score:.4f}"
            return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"
        if role == HitRole:
            return hit
        return None

    def _icon(self, asset_id: int) -> QIcon | None:
        if asset_id not in self._icons:
            png = self.results.thumbnails.get(asset_id)
            if png is None:
                return None
            pixmap = QPixmap()
            pixmap.loadFromData(png, "PNG")
            self._icons[asset_id] = QIcon(pixmap)
        return self._icons[asset_id]
