"""The desktop app against a served library: `ulip2 serve` on loopback (a real uvicorn
server over a real SQLite library indexed with the session's tiny bundle, random weights:
only what holds for any encoder is checked), the app set to its address, token file and a
path mapping onto a mirror of the asset folders, driven offscreen."""

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("uvicorn")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.library.indexer import index_paths  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.runtime import PointEncoder  # noqa: E402
from gui.main_window import DETAILS, MainWindow  # noqa: E402
from meshes import example_folders  # noqa: E402
from serve.app import create_app  # noqa: E402
from serve.hosts import LOOPBACK_NAMES  # noqa: E402
from served import serving  # noqa: E402

WAIT_MS = 20_000
TOKEN = "gui-test-token"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_bundle):
    """(server URL, library file, served root, this machine's mirror of it)."""
    root = example_folders(tmp_path_factory.mktemp("studio") / "share")
    db = root.parent / "lib.sqlite"
    with Library(db) as library:
        index_paths([root / "props", root / "other"], library, PointEncoder(tiny_bundle.bundle, device="cpu"),
                    workers=0)
    mirror = root.parent / "mount"
    shutil.copytree(root, mirror)
    with serving(create_app(db, tiny_bundle.bundle, token=TOKEN, allowed_hosts=LOOPBACK_NAMES)) as url:
        yield url, db, root, mirror


@pytest.fixture
def window(qtbot, tmp_path, studio):
    """The app with the server, its token file and the mapping set, as File → Settings sets them."""
    url, _, root, mirror = studio
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    for key, value in (("server", url), ("server_token_file", str(token_file)), ("path_map", f"{root}={mirror}")):
        settings.setValue(key, value)
    window = MainWindow(settings, db=str(tmp_path / "no-library-here.sqlite"), device="cpu")
    qtbot.addWidget(window)
    window.show()
    return window


def search(qtbot, window, text):
    window.search_box.setText(text)
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        window.run_search()
    qtbot.waitUntil(lambda: not window.jobs.running(DETAILS), timeout=WAIT_MS)
    return searched.args[0]


def test_search_details_and_similar_come_from_the_server_with_paths_mapped(qtbot, window, studio):
    url, _, _, mirror = studio
    assert window.server is not None and window.statusBar().currentMessage() == f"Library server: {url}"
    results = search(qtbot, window, "a wooden chair")
    assert len(results.hits) == 4 and all(Path(h.path).is_relative_to(mirror) for h in results.hits)
    assert set(results.thumbnails) == {h.asset_id for h in results.hits}  # point previews, read off the UI thread
    chair = str(mirror / "props" / "chair.glb")
    assert window.select_path(chair)
    qtbot.waitUntil(lambda: not window.jobs.running(DETAILS), timeout=WAIT_MS)
    assert window.path_label.text() == chair and window.format_label.text() == "glb"
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as similar:
        window.similar_button.click()
    hits = similar.args[0].hits
    assert hits[0].path == str(mirror / "other" / "chair copy.glb") and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert chair not in [h.path for h in hits]


def test_tags_saved_through_the_server_reach_the_library(qtbot, window, studio):
    _, db, _, mirror = studio
    search(qtbot, window, "a lamp")
    lamp = str(mirror / "props" / "lamp.glb")
    assert window.select_path(lamp)
    qtbot.waitUntil(lambda: not window.jobs.running(DETAILS), timeout=WAIT_MS)
    window.tags_edit.setText("brass, desk lamp,, brass")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS) as saved:
        window.save_tags_button.click()
    assert saved.args[0] == ["brass", "desk lamp"]
    with Library(db, read_only=True) as library:
        lamp_id = next(i for i, row in library.assets().items() if row["path"].endswith("lamp.glb"))
        assert library.user_tags([lamp_id])[lamp_id] == ["brass", "desk lamp"]
    results = search(qtbot, window, "a lamp")
    assert "desk lamp" in results.tag_labels  # the tag filter's completions come from the server


def test_without_the_token_a_save_says_why_and_index_runs_on_the_server(qtbot, window):
    window.server_token_file = ""
    assert window._connect()
    search(qtbot, window, "a table")
    window.tags_edit.setText("oak")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS) as saved:
        window.save_tags_button.click()
    assert saved.args[0] is None
    assert "token" in window.findChildren(QMessageBox)[-1].text()
    with qtbot.waitSignal(window.index_finished, timeout=WAIT_MS) as indexed:
        window.start_index()
    assert indexed.args[0] is None
    assert "on the server's machine" in window.findChildren(QMessageBox)[-1].text()


def test_a_picture_for_a_server_without_an_image_tower_gets_the_inline_note(qtbot, window, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(photo)
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        window.search_image(str(photo))
    assert searched.args[0].image_tower is False
    assert "has no image tower" in window.image_zone.text() and not window.image_button.isEnabled()
    assert window.findChildren(QMessageBox) == []


def test_a_server_address_that_cannot_work_is_one_clear_error(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("server", "ftp://assets-host/")
    window = MainWindow(settings, db=str(tmp_path / "lib.sqlite"), device="cpu")
    qtbot.addWidget(window)
    assert window.server is None
    assert "not a server address" in window.findChildren(QMessageBox)[-1].text()
