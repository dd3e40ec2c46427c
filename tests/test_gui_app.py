"""The desktop app driven offscreen with pytest-qt against a real library: generated meshes
indexed with the session's pointbert-tiny bundle. Its weights are random, so no test asks
a text query for meaning; "find similar" must put an identical copy of the asset first,
which holds for any weights."""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import: no display needed

import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from core.library.store import SCHEMA_VERSION, Library  # noqa: E402
from gui.main_window import DETAILS, MainWindow  # noqa: E402
from gui.workers import Jobs  # noqa: E402
from meshes import write_meshes  # noqa: E402

WAIT_MS = 20_000




@pytest.fixture
def make_window(qtbot, tmp_path, tiny_bundle):
    """Opens a window on this test's library file and settings (a restart is a second call)."""
    settings_file = str(tmp_path / "settings.ini")

    def make(folders, bundle=tiny_bundle.path):
        window = MainWindow(QSettings(settings_file, QSettings.Format.IniFormat), folders=[str(f) for f in folders],
                            db=str(tmp_path / "lib.sqlite"), bundle=str(bundle), device="cpu")
        window.index_workers = 0  # load in this process: the suite stays light on busy machines
        qtbot.addWidget(window)
        window.show()
        return window

    return make


def settled(qtbot, window):
    """Waits for the details pane: the current asset's details are read on the pool."""
    qtbot.waitUntil(lambda: not window.jobs.running(DETAILS), timeout=WAIT_MS)


def select(qtbot, window, path):
    assert window.select_path(str(path))
    settled(qtbot, window)


def index(qtbot, window):
    with qtbot.waitSignal(window.index_finished, timeout=WAIT_MS) as indexed:
        with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS):  # the window lists the library after
            window.index_button.click()
    settled(qtbot, window)
    return indexed.args[0]


def test_find_similar_puts_the_identical_copy_first(qtbot, tmp_path, make_window):
    paths = write_meshes(tmp_path / "assets", 6)
    copy = tmp_path / "assets" / f"copy_of_{paths[2].name}"
    shutil.copy(paths[2], copy)
    window = make_window([tmp_path / "assets"])
    outcome = index(qtbot, window)
    assert (outcome.added, outcome.failed, outcome.cancelled) == (7, [], False)
    assert window.results.rowCount() == 7, "after indexing, the grid lists the library"
    select(qtbot, window, str(paths[2]))
    assert window.path_label.text() == str(paths[2])
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        window.similar_button.click()
    hits = searched.args[0].hits
    assert hits[0].path == str(copy)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert str(paths[2]) not in [h.path for h in hits], "the example itself is left out"
    assert copy.name in window.results.data(window.results.index(0))


def test_tag_edit_persists_across_a_restart(qtbot, tmp_path, make_window):
    paths = write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    select(qtbot, window, str(paths[1]))
    window.tags_edit.setText(" oak, hero prop,, oak ")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS) as saved:
        qtbot.keyClick(window.tags_edit, Qt.Key.Key_Return)
    assert saved.args[0] == ["hero prop", "oak"] and window.tags_edit.text() == "hero prop, oak"
    window.close()

    again = make_window([tmp_path / "assets"])
    with qtbot.waitSignal(again.search_finished, timeout=WAIT_MS):
        again.run_search()
    settled(qtbot, again)
    select(qtbot, again, str(paths[1]))
    assert again.tags_edit.text() == "hero prop, oak"
    select(qtbot, again, str(paths[0]))
    assert again.tags_edit.text() == ""


def test_tags_saved_twice_in_a_row_are_written_in_turn(qtbot, tmp_path, make_window):
    """Each save runs on the pool, the second after the first: the library ends with the
    second, and so does the field."""
    paths = write_meshes(tmp_path / "assets", 2)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    select(qtbot, window, paths[1])
    saved = []
    window.tags_saved.connect(saved.append)
    for text in ("oak", "pine, oak", "pine"):
        window.tags_edit.setText(text)
        window.save_tags_button.click()
    qtbot.waitUntil(lambda: len(saved) == 3, timeout=WAIT_MS)
    assert saved == [["oak"], ["oak", "pine"], ["pine"]]
    assert window.tags_edit.text() == "pine" and "Saved 1 tag for mesh_001" in window.statusBar().currentMessage()
    with Library(tmp_path / "lib.sqlite") as library:
        assert library.user_tags() == {library.asset_id(str(paths[1])): ["pine"]}


def test_a_typed_tag_stays_with_the_asset_when_the_bundle_changes(qtbot, tmp_path, make_window):
    """Tagged under the random-weight tiny bundle, read back under the shipped default."""
    from core.bundle import SHIPPED_BUNDLE

    paths = write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    select(qtbot, window, str(paths[2]))
    window.tags_edit.setText("walnut")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS):
        window.save_tags_button.click()
    window.close()

    other = make_window([tmp_path / "assets"], bundle=SHIPPED_BUNDLE)
    outcome = index(qtbot, other)
    assert outcome.updated + outcome.added == 3, "the other bundle embeds every asset anew"
    assert other.results.results.bundle_id != window.results.results.bundle_id
    select(qtbot, other, str(paths[2]))
    assert other.tags_edit.text() == "walnut"


def test_a_version_1_library_keeps_its_typed_tags(qtbot, tmp_path, make_window):
    """Version 1 stored a person's tags as the vocabulary "user" of one bundle; opening the
    file moves them to the asset and leaves zero-shot tags where they were."""
    paths = write_meshes(tmp_path / "assets", 2)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    with Library(tmp_path / "lib.sqlite") as library:
        first, second = (library.asset_id(str(p)) for p in paths)
        library.conn.executescript(f"""
            DROP TABLE user_tags;
            UPDATE meta SET value = '1' WHERE key = 'schema_version';
            INSERT INTO tags VALUES ({first}, 'user', 'hero prop', 1.0, 'an-old-bundle');
            INSERT INTO tags VALUES ({first}, 'lvis', 'lamp', 0.3, 'an-old-bundle');
            INSERT INTO tags VALUES ({second}, 'user', 'oak', 1.0, 'another-bundle');""")
    with Library(tmp_path / "lib.sqlite") as library:
        assert library.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert library.user_tags() == {first: ["hero prop"], second: ["oak"]}
        assert library.labels("tags", "an-old-bundle") == {first: [("lamp", 0.3)]}
    select(qtbot, window, str(paths[1]))
    assert window.tags_edit.text() == "oak"



def test_the_job_controller_delivers_only_the_latest_job_of_a_kind(qtbot):
    """A search started while another runs supersedes it: the first still runs to its end
    (asked to stop), but its progress, result and error never reach the window."""
    jobs = Jobs()
    release = threading.Event()
    ran, delivered, progress = [], [], []

    def slow(name, fail=False, *, on_progress, should_stop):
        on_progress(1, 2)
        assert release.wait(WAIT_MS / 1000)
        ran.append((name, should_stop()))
        if fail:
            raise ValueError(f"{name} failed")
        return name

    def quick(name):
        ran.append((name, False))
        return name

    def deliver(name):
        return lambda outcome: delivered.append((name, outcome))

    jobs.start("search", slow, "first", progress=lambda *counts: progress.append(counts), done=deliver("done"),
               failed=deliver("failed"))
    jobs.start("details", slow, "failing first", True, progress=lambda *counts: progress.append(counts),
               done=deliver("done"), failed=deliver("failed"))
    jobs.start("search", quick, "second", done=deliver("done"), failed=deliver("failed"))
    jobs.start("details", quick, "second details", done=deliver("done"), failed=deliver("failed"))
    jobs.start("index", quick, "another kind", done=deliver("done"), failed=deliver("failed"))
    qtbot.waitUntil(lambda: not any(jobs.running(kind) for kind in ("search", "details", "index")), timeout=WAIT_MS)
    release.set()
    jobs.pool.waitForDone()
    qtbot.wait(100)  # whatever the superseded jobs emitted has been through the event loop now
    assert sorted(delivered) == [("done", "another kind"), ("done", "second"), ("done", "second details")]
    assert ("first", True) in ran and ("failing first", True) in ran, "they ran, and were asked to stop"
    assert progress == []
    jobs.stop()


def test_queued_jobs_run_in_turn_and_each_outcome_is_delivered(qtbot):
    """Saving tags twice in a row: the second save starts when the first has ended."""
    jobs = Jobs()
    active, order, delivered = [], [], []

    def save(name):
        active.append(name)
        overlapping = len(active) > 1
        time.sleep(0.05)
        active.remove(name)
        order.append((name, overlapping))
        return name

    for name in ("a", "b", "c"):
        jobs.start("tags", save, name, queued=True, done=delivered.append, failed=delivered.append)
    assert jobs.running("tags")
    qtbot.waitUntil(lambda: not jobs.running("tags"), timeout=WAIT_MS)
    assert delivered == ["a", "b", "c"] and order == [("a", False), ("b", False), ("c", False)]
    jobs.stop()


def test_a_failing_job_reports_a_readable_error(qtbot, capsys):
    from core.errors import Ulip2Error

    jobs = Jobs()
    failed, done = [], []

    def fails(exc):
        raise exc

    jobs.start("a", fails, Ulip2Error("no library at /x; make one with: ulip2 index FOLDER"), done=done.append,
               failed=failed.append)
    jobs.start("b", fails, KeyError("vec"), done=done.append, failed=failed.append)
    qtbot.waitUntil(lambda: len(failed) == 2, timeout=WAIT_MS)
    assert done == [] and sorted(failed) == ["no library at /x; make one with: ulip2 index FOLDER",
                                             "unexpected KeyError: 'vec' (details printed to the terminal)"]
    assert "Traceback" in capsys.readouterr().err, "a bug's traceback goes to the terminal"
    jobs.stop()


def test_details_that_cannot_be_read_show_an_error_and_an_empty_pane(qtbot, tmp_path, make_window):
    paths = write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    assert window.path_label.text() == str(paths[0])
    window.db = str(tmp_path / "not-a-library.sqlite")  # the file gone bad under the window
    (tmp_path / "not-a-library.sqlite").write_bytes(b"<b>not</b> a database" * 100)
    with qtbot.waitSignal(window.details_shown, timeout=WAIT_MS) as shown:
        assert window.select_path(str(paths[1]))
        assert window.path_label.text() == str(paths[1]) and not window.tags_edit.isEnabled(), "named while read"
    assert shown.args[0] is None
    boxes = window.findChildren(QMessageBox)
    assert len(boxes) == 1 and boxes[0].isVisible() and boxes[0].textFormat() == Qt.TextFormat.PlainText
    assert boxes[0].windowTitle() == "Cannot show the asset"
    assert "not-a-library.sqlite: not a ulip2 library or corrupt" in boxes[0].text()
    assert window.statusBar().currentMessage().startswith("Cannot show the asset: ")
    assert window.path_label.text() == "—" and not window.save_tags_button.isEnabled()


def test_selecting_an_asset_reads_its_rows_only_and_off_the_ui_thread(qtbot, tmp_path, make_window, monkeypatch):
    """Every statement the selection runs is recorded (a trace on each SQLite connection the
    process opens): none runs on the UI thread, and those that read assets, tags, captions or
    a person's tags name the selected id and return its rows only."""
    paths = write_meshes(tmp_path / "assets", 6)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    bundle = window.results.results.bundle_id
    with Library(tmp_path / "lib.sqlite") as library:
        ids = {p: library.asset_id(str(p)) for p in paths}
        library.replace_labels("tags", "vocab", bundle, [(i, [("lamp", 0.4), (f"tag {i}", 0.6)]) for i in ids.values()])
        library.replace_labels("captions", "bank", bundle, [(i, [(f"caption {i}", 0.5)]) for i in ids.values()])
        for i in ids.values():
            library.set_user_tags(i, [f"mine {i}"])
    wanted = ids[paths[3]]

    statements = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    select(qtbot, window, paths[3])
    monkeypatch.undo()
    assert window.suggested_label.text() == f"tag {wanted} (0.60), lamp (0.40)"
    assert window.caption_label.text() == f"caption {wanted}" and window.tags_edit.text() == f"mine {wanted}"
    assert statements and threading.get_ident() not in {thread for thread, _ in statements}, "off the UI thread"
    reads = {table: [sql for _, sql in statements if f" FROM {table} " in sql + " "]
             for table in ("assets", "tags", "captions", "user_tags")}
    assert all(reads.values()), reads
    with Library(tmp_path / "lib.sqlite") as library:
        for table, sqls in reads.items():
            for sql in sqls:
                assert f"IN ({wanted})" in sql, sql
                rows = library.conn.execute(sql).fetchall()
                assert rows and {row[0] for row in rows} == {wanted}, sql


def search(qtbot, window, text=""):
    window.search_box.setText(text)
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        qtbot.keyClick(window.search_box, Qt.Key.Key_Return)
    settled(qtbot, window)
    return searched.args[0]


def test_tag_filter_keeps_assets_with_every_tag(qtbot, tmp_path, make_window, tiny_bundle):
    """Suggested tags come from core's tagger and the random-weight tiny bundle, so which asset
    gets which label is arbitrary: the expected assets are read from the store."""
    from core.library.tagging import tag_library

    paths = write_meshes(tmp_path / "assets", 5)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    (tmp_path / "vocab.txt").write_text("lamp\nchair\ntable\n")
    with Library(tmp_path / "lib.sqlite") as library:
        _, tags = tag_library(library, tiny_bundle.bundle, tmp_path / "vocab.txt", k=1)
        label = tags[library.asset_id(str(paths[0]))][0][0]
        expected = {library.assets([i])[i]["path"] for i, rows in tags.items() if rows[0][0] == label}
    select(qtbot, window, str(paths[0]))
    window.tags_edit.setText("hero")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS):
        window.save_tags_button.click()

    window.tag_filter.setText(label)
    browsed = search(qtbot, window)
    assert {h.path for h in browsed.hits} == expected and window.results.rowCount() == len(expected)
    assert f"tagged {label}" in window.statusBar().currentMessage()
    window.tag_filter.setText(f"hero, {label}")
    assert [h.path for h in search(qtbot, window).hits] == [str(paths[0])]
    window.tag_filter.setText("hero")
    found = search(qtbot, window, "a box")
    assert [h.path for h in found.hits] == [str(paths[0])] and -1 <= found.hits[0].score <= 1
    assert {"hero", label} <= set(window.tag_labels.stringList()), "the filter completes known labels"
    window.tag_filter.setText("no such tag")
    assert search(qtbot, window).hits == [] and window.results.rowCount() == 0


def drop(window, path) -> bool:
    """Drags `path` onto the window and drops it there; False when the window refused it."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    point = QPointF(20, 20)
    enter = QDragEnterEvent(point, *args)
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return False
    QApplication.sendEvent(window, QDropEvent(point, *args))
    return True


def write_image(path):
    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(0x3366CC)
    assert image.save(str(path))
    return path


def test_an_image_in_a_text_only_space_gets_an_inline_note(qtbot, tmp_path, make_window):
    """The tiny bundle is in the minilm space, which has no image tower."""
    write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    assert not drop(window, tmp_path / "assets" / "mesh_000.glb"), "only image files are queries"
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        assert drop(window, write_image(tmp_path / "photo.png"))
    assert searched.args[0].image_tower is False
    over = (window.search_box, window.tag_filter, window.grid, window.grid.viewport())
    assert not any(w.acceptDrops() for w in over), "drags over the search area and the grid reach the window"
    note = window.image_zone.text()
    assert "minilm" in note and "no image tower" in note and "openclip" in note
    assert not window.image_button.isEnabled()
    assert window.findChildren(QMessageBox) == [], "a note in place, not an error box"
    assert window.results.rowCount() == 3, "the grid keeps what it showed"
    search(qtbot, window, "a box")
    assert window.image_zone.text() == note, "a text search knows the space too and keeps the note"


def test_an_image_dropped_on_the_window_searches_by_it(qtbot, tmp_path, make_window):
    """A pointbert-tiny bundle in a tiny open_clip space, both with random weights: the test
    checks that the image reaches core's image search and its hits come back, not meaning."""
    import json

    import open_clip

    from core.export import export_bundle
    from core.models import create_encoder

    config = tmp_path / "ulip2-gui-tiny-vit.json"
    config.write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(config)
    bundle = tmp_path / "clip-bundle"
    export_bundle(bundle, model=create_encoder("pointbert-tiny", embed_dim=32, seed=0).eval(),
                  space="openclip:ulip2-gui-tiny-vit:none")
    write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"], bundle=bundle)
    index(qtbot, window)
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as searched:
        assert drop(window, write_image(tmp_path / "photo.png"))
    results = searched.args[0]
    assert results is not None, window.statusBar().currentMessage()
    assert results.image_tower and results.query == "image photo.png"
    assert len(results.hits) == 3 and all(-1 <= h.score <= 1 for h in results.hits)
    assert window.results.rowCount() == 3 and "“image photo.png”" in window.statusBar().currentMessage()
    assert window.image_zone.text().startswith("Drop an image")


LABEL_WAIT_MS = 120_000  # the first use of the minilm space loads it (seconds on a busy machine)


def test_tag_and_caption_from_the_library_menu(qtbot, tmp_path, make_window):
    """With the random-weight tiny bundle which label wins is arbitrary: the details must show
    what core's tagger stored, and the dialog must offer core's vocabularies."""
    from core.spaces.vocabularies import VOCABULARIES

    paths = write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    select(qtbot, window, str(paths[1]))
    assert "none yet" in window.suggested_label.text()
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("lamp\nchair\ntable\nsofa\n")
    offered = []

    def fill_dialog():
        dialog = QApplication.activeModalWidget()
        offered.extend(dialog.source.itemText(i) for i in range(dialog.source.count()))
        dialog.source.setCurrentText(str(vocab))
        dialog.k.setValue(2)
        dialog.accept()

    QTimer.singleShot(0, fill_dialog)
    with qtbot.waitSignal(window.labelling_finished, timeout=LABEL_WAIT_MS) as tagged:
        window.label_actions[0].trigger()
    assert offered == list(VOCABULARIES)
    assert tagged.args[0] == (str(vocab.resolve()), 3)
    settled(qtbot, window)  # the details are read again
    assert all(action.isEnabled() for action in window.label_actions) and window.busy.isHidden()
    with Library(tmp_path / "lib.sqlite") as library:
        stored = library.labels("tags", window.results.results.bundle_id)[library.asset_id(str(paths[1]))]
    assert 1 <= len(stored) <= 2, "k=2, and tags under the 0.0 threshold are dropped"
    assert window.suggested_label.text() == ", ".join(f"{t} ({s:.2f})" for t, s in stored)

    bank = tmp_path / "bank.txt"
    bank.write_text("A red lamp.\nA wooden chair.\n")
    with qtbot.waitSignal(window.labelling_finished, timeout=LABEL_WAIT_MS) as captioned:
        window.label_assets("caption", str(bank), 1)
    assert captioned.args[0] == (str(bank.resolve()), 3)
    settled(qtbot, window)
    assert window.caption_label.text() in ("A red lamp.", "A wooden chair.")

    with qtbot.waitSignal(window.labelling_finished, timeout=LABEL_WAIT_MS) as failed:
        window.label_assets("tag", str(tmp_path / "no-such-vocab.txt"), 2)
    assert failed.args[0] is None
    assert "no vocabulary" in window.findChildren(QMessageBox)[-1].text()


def test_tags_and_captions_export_to_csv_and_json(qtbot, tmp_path, make_window):
    """Random-weight tiny bundle: the files must hold what the store holds, a typed tag first."""
    import csv
    import json

    paths = write_meshes(tmp_path / "assets", 3)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    (tmp_path / "vocab.txt").write_text("lamp\nchair\ntable\n")
    (tmp_path / "bank.txt").write_text("A red lamp.\nA wooden chair.\n")
    for kind, source in (("tag", "vocab.txt"), ("caption", "bank.txt")):
        with qtbot.waitSignal(window.labelling_finished, timeout=LABEL_WAIT_MS):
            window.label_assets(kind, str(tmp_path / source), 1)
    select(qtbot, window, str(paths[0]))
    window.tags_edit.setText("hero")
    with qtbot.waitSignal(window.tags_saved, timeout=WAIT_MS):
        window.save_tags_button.click()

    with qtbot.waitSignal(window.export_finished, timeout=WAIT_MS) as exported:
        window.export_to("tag", str(tmp_path / "tags.csv"))
    assert exported.args[0] == str(tmp_path / "tags.csv"), window.statusBar().currentMessage()
    with open(tmp_path / "tags.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["path"] for r in rows} == {str(p) for p in paths}
    first = [r for r in rows if r["path"] == str(paths[0])]
    assert [(r["rank"], r["tag"], float(r["score"])) for r in first][0] == ("1", "hero", 1.0)
    assert len(first) == 2 and first[1]["tag"] in ("lamp", "chair", "table")

    with qtbot.waitSignal(window.export_finished, timeout=WAIT_MS):
        window.export_to("caption", str(tmp_path / "captions.json"))
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert set(captions) == {str(p) for p in paths}
    assert all(len(c) == 1 and c[0]["caption"] in ("A red lamp.", "A wooden chair.") for c in captions.values())

    with qtbot.waitSignal(window.export_finished, timeout=WAIT_MS) as refused:
        window.export_to("tag", str(tmp_path / "tags.txt"))
    assert refused.args[0] is None and ".csv or .json" in window.findChildren(QMessageBox)[-1].text()


@pytest.fixture
def fake_programs(tmp_path, monkeypatch):
    """`blender` and `xdg-open` scripts first on PATH, each writing the arguments it was
    started with to NAME.args in tmp_path (whole, by a rename), instead of opening anything."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("blender", "xdg-open"):
        out = tmp_path / f"{name}.args"
        (folder / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{out}.tmp" && mv "{out}.tmp" "{out}"\n')
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def started_with(qtbot, tmp_path, name):
    out = tmp_path / f"{name}.args"
    qtbot.waitUntil(out.exists, timeout=WAIT_MS)
    return out.read_text().splitlines()


def test_finding_blender_and_the_command_that_opens_an_asset(tmp_path, fake_programs, monkeypatch):
    from gui.desktop import DesktopError, blender_command, find_blender

    assert find_blender() == str(fake_programs / "blender"), "blender on PATH"
    assert find_blender(str(fake_programs / "blender")) == str(fake_programs / "blender"), "the setting first"
    with pytest.raises(DesktopError, match="File → Settings is not a program"):
        find_blender(str(tmp_path / "no-blender"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for version in ("4.1", "4.2"):
        (tmp_path / "apps" / f"blender-{version}").mkdir(parents=True)
        shutil.copy(fake_programs / "blender", tmp_path / "apps" / f"blender-{version}" / "blender")
    assert find_blender(candidates=[str(tmp_path / "apps" / "blender-*" / "blender")]) == \
        str(tmp_path / "apps" / "blender-4.2" / "blender"), "the usual places, newest first"
    with pytest.raises(DesktopError, match="Blender was not found: set its program in File → Settings"):
        find_blender(candidates=[])

    assert blender_command("blender", "/a/scene.blend") == ["blender", "/a/scene.blend"]
    argv = blender_command("blender", "/a/l'amp.OBJ")
    assert argv[:2] == ["blender", "--python-expr"]
    assert "bpy.ops.wm.obj_import(filepath=\"/a/l'amp.OBJ\")" in argv[2], "the path quoted as a Python string"
    with pytest.raises(DesktopError, match="no importer for .off"):
        blender_command("blender", "/a/cube.off")


def test_arrows_move_enter_opens_in_blender_and_reveal_shows_the_folder(qtbot, tmp_path, make_window,
                                                                      fake_programs):
    paths = write_meshes(tmp_path / "assets", 4)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    assert window.grid.currentIndex().row() == 0 and window.path_label.text() == str(paths[0])
    qtbot.keyClick(window.grid, Qt.Key.Key_Right)
    settled(qtbot, window)
    assert window.grid.currentIndex().row() == 1 and window.path_label.text() == str(paths[1])
    qtbot.keyClick(window.grid, Qt.Key.Key_Left)
    settled(qtbot, window)
    assert window.path_label.text() == str(paths[0])

    qtbot.keyClick(window.grid, Qt.Key.Key_Return)
    argv = started_with(qtbot, tmp_path, "blender")
    assert argv[0] == "--python-expr" and f"bpy.ops.import_scene.gltf(filepath='{paths[0]}')" in argv[1]
    assert "Opening mesh_000.glb in" in window.statusBar().currentMessage()

    window.reveal_button.click()
    assert started_with(qtbot, tmp_path, "xdg-open") == [str(tmp_path / "assets")]

    window.blender = str(tmp_path / "no-blender")
    window.blender_button.click()
    boxes = window.findChildren(QMessageBox)
    assert len(boxes) == 1 and "is not a program" in boxes[0].text()


def test_indexing_can_be_cancelled_and_resumed(qtbot, tmp_path, make_window):
    write_meshes(tmp_path / "assets", 6)
    window = make_window([tmp_path / "assets"])
    window.index_batch_size = 2
    with qtbot.waitSignal(window.index_finished, timeout=WAIT_MS) as first:
        window.index_button.click()
        assert window.cancel_button.isEnabled() and not window.index_button.isEnabled()
        window.cancel_button.click()  # before the first commit: the run stops after it
    outcome = first.args[0]
    assert (outcome.cancelled, outcome.done, outcome.total, outcome.added) == (True, 2, 6, 2)
    assert "cancelled: 2 of 6 files done" in window.index_status.text()
    assert window.index_button.isEnabled() and not window.cancel_button.isEnabled()

    second = index(qtbot, window)
    assert (second.cancelled, second.added, second.unchanged) == (False, 4, 2), "the rest, not all again"
    with Library(tmp_path / "lib.sqlite") as library:
        assert len(library.assets()) == 6


def test_index_finishes_what_a_killed_index_run_left(qtbot, tmp_path, make_window, tiny_bundle):
    """`ulip2 index` in another process, killed with SIGKILL mid-run; the app's Index then
    embeds the rest: every file once, nothing lost, nothing done twice."""
    paths = write_meshes(tmp_path / "assets", 48, subdivisions=4)
    db = tmp_path / "lib.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "index", str(tmp_path / "assets"), "--db", str(db),
                             "--bundle", str(tiny_bundle.path), "--batch-size", "4", "--workers", "0", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    committed, deadline = 0, time.monotonic() + 60
    while committed < 8 and proc.poll() is None and time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                committed = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        except sqlite3.Error:
            pass  # the schema is not there yet
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Library(db) as library:
        survived = len(library.assets())
    assert 8 <= survived < 48, f"the kill must land mid-run ({survived} of 48 committed)"

    window = make_window([tmp_path / "assets"])
    outcome = index(qtbot, window)
    assert (outcome.added, outcome.unchanged, outcome.failed) == (48 - survived, survived, [])
    with Library(db) as library:
        assert library.integrity_check() == "ok"
        rows = [r[0] for r in library.conn.execute("SELECT path FROM assets")]
        assert sorted(rows) == sorted(str(p) for p in paths), "no asset lost or duplicated"
        assert library.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 48
    assert window.results.rowCount() == 48


def test_a_bad_file_shows_a_readable_message_and_the_rest_indexes(qtbot, tmp_path, make_window):
    write_meshes(tmp_path / "assets", 3)
    (tmp_path / "assets" / "broken.ply").write_bytes(b"ply\nthis is not a mesh\n")
    window = make_window([tmp_path / "assets"])
    outcome = index(qtbot, window)
    assert outcome.added == 3 and [f["path"] for f in outcome.failed] == [str(tmp_path / "assets" / "broken.ply")]
    boxes = window.findChildren(QMessageBox)
    assert len(boxes) == 1 and boxes[0].isVisible()
    text = boxes[0].text()
    assert "1 file could not be indexed; the others were" in text and "broken.ply" in text
    assert "Traceback" not in text + boxes[0].detailedText()
    assert window.results.rowCount() == 3


def test_app_command_writes_a_screenshot(tmp_path, tiny_bundle):
    """The documented command in its own process, as a person runs it: it runs the
    application's event loop to the end, which must not happen inside this test session."""
    write_meshes(tmp_path / "assets", 3)
    out = tmp_path / "shots" / "app.png"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}  # QSettings stay in tmp
    done = subprocess.run([sys.executable, "-m", "cli", "app", "--library", str(tmp_path / "assets"),
                           "--db", str(tmp_path / "lib.sqlite"), "--bundle", str(tiny_bundle.path),
                           "--device", "cpu", "--screenshot", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500


def test_cli_stays_light_without_qt():
    code = ("import sys, cli.main; cli.main.build_parser(); "
            "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported by ulip2 --help'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_file_names_with_markup_show_as_written(qtbot, tmp_path, make_window):
    """A file named like rich text is shown as plain text in the details, the grid's tooltip
    and the error box: user data is never markup."""
    write_meshes(tmp_path / "assets", 2)
    mesh = sorted((tmp_path / "assets").iterdir())[0]
    name = f"<font size=6 color=red>LIBRARY CORRUPTED{mesh.suffix}"
    shutil.copy(mesh, tmp_path / "assets" / name)
    (tmp_path / "assets" / "<b>broken.ply").write_bytes(b"ply\nthis is not a mesh\n")
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    path = str(tmp_path / "assets" / name)
    select(qtbot, window, path)
    assert window.path_label.text() == path
    assert window.path_label.textFormat() == Qt.TextFormat.PlainText
    row = next(r for r in range(window.results.rowCount())
               if name in window.results.data(window.results.index(r)))
    tooltip = window.results.data(window.results.index(row), Qt.ItemDataRole.ToolTipRole)
    assert "&lt;font size=6 color=red&gt;" in tooltip and "<font" not in tooltip
    box = window.findChildren(QMessageBox)[0]
    assert box.textFormat() == Qt.TextFormat.PlainText and "<b>broken.ply" in box.text()


def test_known_bad_files_still_count_as_not_read(qtbot, tmp_path, make_window):
    """A second Index skips the files that failed by their own fault (the library's errors
    table remembers them): they are still not in the library, and the line says so."""
    write_meshes(tmp_path / "assets", 2)
    for i in range(3):
        (tmp_path / "assets" / f"broken_{i}.ply").write_bytes(b"ply\nthis is not a mesh\n")
    window = make_window([tmp_path / "assets"])
    first = index(qtbot, window)
    assert (len(first.failed), first.known_errors) == (3, 0)
    assert window.index_status.text().endswith(", 3 could not be read")
    second = index(qtbot, window)
    assert (second.failed, second.known_errors, second.unchanged) == ([], 3, 2)
    assert ", 3 could not be read (3 of them known from earlier runs, skipped until they change)" in \
        window.index_status.text()


def test_the_grid_says_when_it_shows_only_the_first_results(qtbot, tmp_path, make_window):
    from gui.jobs import RESULTS_K

    write_meshes(tmp_path / "assets", RESULTS_K + 2)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    browsed = window.results.results
    assert (len(browsed.hits), browsed.total) == (RESULTS_K, RESULTS_K + 2)
    assert window.count_label.text() == (f"Showing {RESULTS_K} of {RESULTS_K + 2} assets in the library, "
                                         "the first by path; a search or a tag filter finds the rest")
    found = search(qtbot, window, "a box")
    assert (len(found.hits), found.total) == (RESULTS_K, RESULTS_K + 2)
    assert window.count_label.text().startswith(f"Showing {RESULTS_K} of {RESULTS_K + 2} results for “a box”")
    assert window.statusBar().currentMessage().startswith(f"Showing {RESULTS_K} of {RESULTS_K + 2} results")
    select(qtbot, window, str(tmp_path / "assets" / "mesh_000.glb"))
    with qtbot.waitSignal(window.search_finished, timeout=WAIT_MS) as similar:
        window.similar_button.click()
    assert similar.args[0].total == RESULTS_K + 1, "the example itself is not among them"
    window.tag_filter.setText("no such tag")
    search(qtbot, window)
    assert window.count_label.text() == "0 assets tagged no such tag in the library"


def test_suggested_tags_read_as_the_report_writes_them(qtbot, tmp_path, make_window, tiny_bundle):
    """LVIS labels such as pan_(metal_container) show as the HTML report shows them."""
    from core.library.report import write_report
    from core.library.tagging import tag_library

    paths = write_meshes(tmp_path / "assets", 2)
    window = make_window([tmp_path / "assets"])
    index(qtbot, window)
    (tmp_path / "vocab.txt").write_text("pan_(metal_container)\nbat_(animal)\n")
    with Library(tmp_path / "lib.sqlite") as library:
        _, tags = tag_library(library, tiny_bundle.bundle, tmp_path / "vocab.txt", k=1, threshold=-1.0)
        (label, score), = tags[library.asset_id(str(paths[0]))]
        page = write_report(library, tiny_bundle.bundle, tmp_path / "report.html", []).read_text()
    readable = {"pan_(metal_container)": "pan (metal container)", "bat_(animal)": "bat (animal)"}[label]
    assert f'<span class="tag">{readable} <small>{score:.2f}</small>' in page
    search(qtbot, window)  # the details read the tags anew
    select(qtbot, window, str(paths[0]))
    assert window.suggested_label.text() == f"{readable} ({score:.2f})"


def test_a_library_that_does_not_load_is_named():
    from gui.app import missing_libraries

    assert missing_libraries(["libc.so.6", "libulip2-no-such.so.1", "libm.so.6"]) == ["libulip2-no-such.so.1"]


def _ldd(path) -> dict[str, bool]:
    """{soname: whether it resolves} of everything `path` loads, as the dynamic loader says."""
    lines = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split()[0]: "not found" not in line for line in lines if "=>" in line}


def test_the_xcb_libraries_are_those_qts_plugin_links_and_resolve_as_the_loader_says():
    """The list against PySide6's own libqxcb.so: every library it links beyond those
    QtGui and QtWidgets bring (already loaded when the check runs) and Qt's own is listed,
    and what is missing here is what ldd finds missing (here: libxcb-icccm4 and
    libxcb-keysyms1 are not installed; where all are, both sides are empty)."""
    from pathlib import Path

    import PySide6

    from gui.app import XCB_LIBRARIES, missing_libraries

    qt = Path(PySide6.__file__).parent / "Qt"
    plugin = _ldd(qt / "plugins" / "platforms" / "libqxcb.so")
    loaded = {**_ldd(qt / "lib" / "libQt6Gui.so.6"), **_ldd(qt / "lib" / "libQt6Widgets.so.6")}
    needed = {name for name in plugin if name not in loaded and not name.startswith("libQt6")}
    assert needed == set(XCB_LIBRARIES)
    assert missing_libraries(XCB_LIBRARIES) == [name for name in XCB_LIBRARIES if not plugin[name]]


def test_on_an_x_display_without_them_the_app_names_the_packages_and_exits_2(monkeypatch, capsys):
    import cli.main
    import gui.app

    monkeypatch.setattr(gui.app, "XCB_LIBRARIES", {"libxcb-shape.so.0": "libxcb-shape0",
                                                    "libulip2-no-such.so.1": "ulip2-no-such1"})
    monkeypatch.setattr(gui.app, "application", lambda: pytest.fail("a QApplication despite the missing library"))
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM")
    assert cli.main.main(["app"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: the desktop app cannot open windows on this X display without libulip2-no-such.so.1: "
                   "sudo apt install ulip2-no-such1 (or run it headless with QT_QPA_PLATFORM=offscreen)\n")
    for env in ({"DISPLAY": ":99", "WAYLAND_DISPLAY": "wayland-0"}, {"DISPLAY": ":99", "QT_QPA_PLATFORM": "offscreen"},
                {}):
        assert not gui.app.platform_is_xcb(env), env
    assert gui.app.platform_is_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"})
