"""`ulip2 thumbnails`: point previews replaced by Blender renders. Real bpy workers (Workbench
through EGL), real SQLite, and the session's pointbert-tiny bundle (random weights: the
embeddings only have to exist here)."""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import (the desktop app test): no display needed

import io
import json
import signal
import sqlite3
import struct
import time
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from core.library.indexer import bundle_id, index_paths
from core.library.store import BLENDER, POINTS, SCHEMA_VERSION, AssetRecord, Library, LibraryError
from core.library.thumbnails import THUMBNAIL_SIZE
from core.runtime import PointEncoder
from meshes import write_meshes

REPO = Path(__file__).resolve().parents[1]


def write_unimportable_glb(path: Path) -> None:
    """A box glTF that trimesh reads but Blender's importer refuses: it requires an
    extension no importer has."""
    trimesh.creation.box().export(path)
    data = path.read_bytes()
    length = struct.unpack("<I", data[12:16])[0]
    document = json.loads(data[20:20 + length])
    document["extensionsRequired"] = document["extensionsUsed"] = ["EXT_ulip2_unknown"]
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)  # glb chunks are 4-byte aligned
    body = data[16:20] + text + data[20 + length:]
    path.write_bytes(data[:8] + struct.pack("<I", 16 + len(body)) + struct.pack("<I", len(text)) + body)


def thumbnails_cli(db: Path, *extra: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "cli", "thumbnails", "--db", str(db), "--workers", "2",
                           "--json", "--quiet", *extra], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_thumbnails_replace_point_previews_with_renders(tmp_path, tiny_bundle):
    """Trimesh formats get renders (the .blend's marked assets had theirs from indexing and
    are not redone); a file Blender refuses keeps its preview and is reported; .off keeps
    its preview (no importer); a rerun renders nothing; re-embedding keeps the renders."""
    pytest.importorskip("bpy")
    from blender_files import MARKED, write_blend_files

    folder = tmp_path / "assets"
    write_meshes(folder, 5)  # four glb, one ply
    trimesh.creation.cylinder(radius=0.4, height=1.2).export(folder / "post.obj")
    trimesh.creation.cone(radius=0.5, height=1.0).export(folder / "cone.stl")
    trimesh.creation.icosphere(subdivisions=1).export(folder / "ball.off")
    write_unimportable_glb(folder / "refused.glb")
    write_blend_files(folder, fbx=False)
    db = tmp_path / "lib.sqlite"
    encoder = PointEncoder(tiny_bundle.bundle, device="cpu")
    with Library(db) as library:
        indexed = index_paths([folder], library, encoder, workers=0)
        assert indexed.failed == [] and indexed.added == 11
        ids = {(Path(a["path"]).name, a["object"]): i for i, a in library.assets().items()}
        before = {key: (library.thumbnail(i), library.thumbnail_source(i)) for key, i in ids.items()}
    blend_keys = {("scene.blend", name) for name in MARKED}
    assert {key for key, (_, source) in before.items() if source == BLENDER} == blend_keys
    assert {key for key, (_, source) in before.items() if source == POINTS} == set(ids) - blend_keys

    code, report = thumbnails_cli(db)
    assert code == 1, "a file failed"
    assert [(Path(f["path"]).name, "EXT_ulip2_unknown" in f["reason"]) for f in report["failed"]] == \
        [("refused.glb", True)]
    assert report["rendered"] == 8, "ball.off renders from its glTF"
    with Library(db) as library:
        for key, asset_id in ids.items():
            png, source = library.thumbnail(asset_id), library.thumbnail_source(asset_id)
            if key[0] == "refused.glb":
                assert (png, source) == before[key], f"{key} keeps its point preview"
                continue
            assert source == BLENDER, key
            if key in blend_keys:
                assert png == before[key][0], "rendered while indexing: not redone"
                continue
            assert png != before[key][0], key
            image = Image.open(io.BytesIO(png))
            assert (image.format, image.size, image.mode) == ("PNG", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), "RGBA"), key
            covered = (np.asarray(image)[..., 3] > 127).mean()
            assert 0.05 < covered < 0.9, (key, covered)  # a framed object on a transparent background
        assert [Path(r["path"]).name for r in library.unrendered()] == ["refused.glb"]

        # The same content embedded again (another bundle does this) keeps the render.
        path = str(folder / "mesh_000.glb")
        asset_id = ids[("mesh_000.glb", "")]
        row = library.assets([asset_id])[asset_id]
        library.write_batch(bundle_id(encoder.bundle), encoder.bundle.space,
                            [AssetRecord(path, row["size"], 0, row["sha256"], np.ones(384), b"preview")], [], [])
        assert library.thumbnail_source(asset_id) == BLENDER and library.thumbnail(asset_id) != b"preview"

    code, again = thumbnails_cli(db)
    assert (code, again["rendered"], len(again["failed"])) == (1, 0, 1), "a rerun renders nothing new"


def test_an_empty_render_is_a_failure_and_the_preview_stays(tmp_path, tiny_bundle):
    """An OBJ in UTF-16 (assimp's box_UTF16BE.obj is one): trimesh reads its box, Blender's
    importer makes its 8 vertices all (0, 0, 0), and the render is fully transparent."""
    pytest.importorskip("bpy")
    folder, db = tmp_path / "assets", tmp_path / "lib.sqlite"
    write_meshes(folder, 1)
    box = folder / "box_UTF16BE.obj"
    box.write_bytes(("\ufeff" + trimesh.creation.box().export(file_type="obj")).encode("utf-16-be"))
    with Library(db) as library:
        indexed = index_paths([folder], library, PointEncoder(tiny_bundle.bundle, device="cpu"), workers=0)
        assert (indexed.added, indexed.failed) == (2, []), "trimesh reads the box"
        box_id = library.asset_id(str(box))
        preview = library.thumbnail(box_id)

    code, report = thumbnails_cli(db)
    assert code == 1 and report["rendered"] == 1, "the other mesh renders"
    assert [f["path"] for f in report["failed"]] == [str(box)]
    assert report["failed"][0]["reason"].startswith("rendered nothing: box_UTF16BE.obj shows nothing")
    with Library(db) as library:
        assert (library.thumbnail(box_id), library.thumbnail_source(box_id)) == (preview, POINTS)
        assert [r["path"] for r in library.unrendered()] == [str(box)], "the next run tries it again"


def test_a_render_of_one_colour_is_empty_too():
    from core.library.thumbnails import rendered_nothing

    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    background = Image.new("RGB", (16, 16), (236, 236, 236))
    assert rendered_nothing(png(background))
    assert rendered_nothing(png(Image.new("RGBA", (16, 16), (200, 30, 30, 0)))), "colour under no alpha"
    background.putpixel((3, 4), (235, 236, 236))
    assert not rendered_nothing(png(background)), "one pixel differs"


def test_kill_9_mid_run_keeps_every_committed_render_and_the_rerun_does_the_rest(tmp_path, tiny_bundle):
    pytest.importorskip("bpy")
    folder, db = tmp_path / "assets", tmp_path / "lib.sqlite"
    write_meshes(folder, 12)
    with Library(db) as library:
        index_paths([folder], library, PointEncoder(tiny_bundle.bundle, device="cpu"), workers=0)
    command = [sys.executable, "-m", "cli", "thumbnails", "--db", str(db), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: the kill takes its Blender worker too

    def rendered() -> int:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM thumbnails WHERE source = '{BLENDER}'").fetchone()[0]

    deadline = time.monotonic() + 300
    while proc.poll() is None and rendered() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = rendered()
    assert 2 <= committed < 12, f"the kill must land mid-run ({committed} of 12 rendered)"
    code, report = thumbnails_cli(db)
    assert (code, report["rendered"], report["failed"]) == (0, 12 - committed, []), "it resumes with the rest"
    with Library(db) as library:
        assert library.unrendered() == [] and library.integrity_check() == "ok"


def test_a_schema_3_library_migrates_keeping_its_thumbnails(tmp_path):
    """Version 3 stored thumbnails without saying what made them: the files only Blender
    reads were rendered, the rest were point previews; both PNGs stay as they were."""
    db = tmp_path / "v3.sqlite"
    with Library(db) as library:  # today's schema, then taken back to version 3's thumbnails table
        library.write_batch("b1", "minilm", [
            AssetRecord("/lib/chair.glb", 1, 1, "aa", np.ones(2), b"chair preview"),
            AssetRecord("/lib/set.blend", 1, 1, "bb", np.ones(2), b"crate render", "Crate")], [], [])
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            ALTER TABLE thumbnails DROP COLUMN source;
            UPDATE meta SET value = '3' WHERE key = 'schema_version';
        """)
    with Library(db) as library:
        assert library.get_meta("schema_version") == str(SCHEMA_VERSION)
        ids = {a["path"]: i for i, a in library.assets().items()}
        assert library.thumbnail(ids["/lib/chair.glb"]) == b"chair preview"
        assert library.thumbnail(ids["/lib/set.blend"]) == b"crate render"
        assert library.thumbnail_source(ids["/lib/chair.glb"]) == POINTS
        assert library.thumbnail_source(ids["/lib/set.blend"]) == BLENDER
        assert [r["path"] for r in library.unrendered()] == ["/lib/chair.glb"]
        assert len(library.unrendered(redo=True)) == 2
        assert library.integrity_check() == "ok"


def test_without_bpy_it_says_what_to_install(tmp_path, monkeypatch):
    """bpy is installed here, so the probe is made to answer as on a machine without it."""
    import core.blender_pool
    from core.library.thumbnails import render_thumbnails

    monkeypatch.setattr(core.blender_pool, "blender_available", lambda: False)
    with Library(tmp_path / "lib.sqlite") as library, \
            pytest.raises(LibraryError, match=r"needs the blender extra: pip install 'ulip2\[blender\]'"):
        render_thumbnails(library)


def test_the_desktop_app_renders_thumbnails_from_the_library_menu(qtbot, tmp_path, tiny_bundle):
    """Library → Render thumbnails in Blender runs core's step on the window's pool; the bar
    counts the assets, and the grid then shows the renders."""
    pytest.importorskip("bpy")
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    paths = write_meshes(tmp_path / "assets", 2)
    db = tmp_path / "lib.sqlite"
    with Library(db) as library:
        index_paths([tmp_path / "assets"], library, PointEncoder(tiny_bundle.bundle, device="cpu"), workers=0)
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), db=str(db),
                        bundle=str(tiny_bundle.path), device="cpu")
    window.blender_workers = 1
    qtbot.addWidget(window)
    window.show()
    counted = []
    window.busy.valueChanged.connect(counted.append)
    with qtbot.waitSignal(window.thumbnails_finished, timeout=300_000) as finished, \
            qtbot.waitSignal(window.search_finished, timeout=300_000):  # the grid is listed again after
        window.thumbnail_action.trigger()
        assert not window.thumbnail_action.isEnabled()
    report = finished.args[0]
    assert (report.rendered, report.failed) == (2, [])
    assert window.thumbnail_action.isEnabled() and window.busy.isHidden()
    assert window.busy.maximum() == 0, "back to the busy bar tagging shows"
    assert counted[-1] == 2
    with Library(db) as library:
        rendered = {library.asset_id(str(p)): library.thumbnail(library.asset_id(str(p))) for p in paths}
        assert {library.thumbnail_source(i) for i in rendered} == {BLENDER}
    assert window.results.results.thumbnails == rendered, "the grid shows the renders"
