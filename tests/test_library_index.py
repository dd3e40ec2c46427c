"""Library indexing with real SQLite and a real bundle (the session's pointbert-tiny bundle:
random weights, so these tests check mechanics, never meaning): incremental re-index,
changed and deleted files, bundle changes, a kill -9 mid-run, a corpus of bad files,
.blend/.fbx files through real Blender workers, and schema migration."""

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from core.blender_pool import NEEDS_BLENDER
from core.errors import Ulip2Error
from core.library.indexer import bundle_id, index_paths
from core.library.store import AssetRecord, Library, LibraryError
from core.library.thumbnails import THUMBNAIL_SIZE
from core.runtime import PointEncoder
from meshes import write_meshes

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return PointEncoder(tiny_bundle.bundle, device="cpu")


def run(roots, db, encoder, **kw):
    with Library(db) as library:
        return index_paths(roots, library, encoder, workers=kw.pop("workers", 0), **kw)


def test_index_reindex_change_delete(tmp_path, encoder):
    paths = write_meshes(tmp_path / "assets", 8)
    db = tmp_path / "lib.sqlite"
    first = run([tmp_path / "assets"], db, encoder)
    assert (first.seen, first.added, first.failed) == (8, 8, [])

    again = run([tmp_path / "assets"], db, encoder)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 8), "a re-index redoes nothing"

    # Touched but identical: the hash says unchanged, no re-embedding.
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = run([tmp_path / "assets"], db, encoder)
    assert (touched.added, touched.updated, touched.unchanged) == (0, 0, 8)

    trimesh.creation.annulus(r_min=0.2, r_max=1.0, height=0.3).export(paths[1])
    with Library(db) as library:
        old_id = library.asset_id(str(paths[1]))
        library.replace_labels("tags", "t", bundle_id(encoder.bundle), [(old_id, [("old", 0.5)])])
    changed = run([tmp_path / "assets"], db, encoder)
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 7), "only the changed file is redone"
    with Library(db) as library:
        assert library.labels("tags", bundle_id(encoder.bundle)) == {}, "tags of old content are dropped"

    paths[2].unlink()
    deleted = run([tmp_path / "assets"], db, encoder)
    assert (deleted.removed, deleted.seen) == (1, 7)
    with Library(db) as library:
        ids, vectors = library.embeddings(bundle_id(encoder.bundle))
        assert len(ids) == 7 and str(paths[2]) not in {a["path"] for a in library.assets().values()}
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert library.thumbnail(int(ids[0]))[:8] == b"\x89PNG\r\n\x1a\n"
        assert library.integrity_check() == "ok"


def test_parallel_loading_matches_in_process(tmp_path, encoder):
    write_meshes(tmp_path / "a", 10)
    serial = run([tmp_path / "a"], tmp_path / "serial.sqlite", encoder, workers=0)
    pooled = run([tmp_path / "a"], tmp_path / "pooled.sqlite", encoder, workers=2)
    assert serial.added == pooled.added == 10
    bid = bundle_id(encoder.bundle)
    with Library(tmp_path / "serial.sqlite") as a, Library(tmp_path / "pooled.sqlite") as b:
        np.testing.assert_allclose(a.embeddings(bid)[1], b.embeddings(bid)[1], atol=1e-5)


def test_the_ray_engine_reads_each_file_in_a_task_and_writes_the_same_library(tmp_path, encoder, local_ray):
    """--engine ray on a local Ray: meshes, a bad file and a .blend's marked assets (through
    a fresh Blender worker per task) give the rows a local run gives; this process writes."""
    pytest.importorskip("bpy")
    from blender_files import MARKED, write_blend_files

    write_meshes(tmp_path / "a", 4)
    write_blend_files(tmp_path / "a", fbx=False)
    (tmp_path / "a" / "broken.glb").write_bytes(b"glTF not really")
    local = run([tmp_path / "a"], tmp_path / "local.sqlite", encoder)
    farmed = run([tmp_path / "a"], tmp_path / "ray.sqlite", encoder, engine="ray")
    assert (farmed.added, len(farmed.failed)) == (local.added, len(local.failed)) == (4 + len(MARKED), 1)
    assert farmed.failed[0]["reason"] == local.failed[0]["reason"]
    bid = bundle_id(encoder.bundle)
    with Library(tmp_path / "local.sqlite") as a, Library(tmp_path / "ray.sqlite") as b:
        rows = {(r["path"], r["object"]): i for i, r in a.assets().items()}
        same = {(r["path"], r["object"]): i for i, r in b.assets().items()}
        assert set(rows) == set(same)
        for key, i in rows.items():
            np.testing.assert_allclose(a.embeddings(bid, [i])[1], b.embeddings(bid, [same[key]])[1], atol=1e-5)
    assert local_ray.is_initialized(), "a Ray the caller started is left running"
    with pytest.raises(Ulip2Error, match="choose local or ray"):
        run([tmp_path / "a"], tmp_path / "x.sqlite", encoder, engine="spark")


def test_progress_follows_the_commits_and_a_stop_keeps_them(tmp_path, encoder):
    """on_progress(done, total) in files before the first batch and after each commit;
    should_stop, asked after each commit, ends the run there and the next run resumes."""
    write_meshes(tmp_path / "a", 6)
    calls = []
    stopped = run([tmp_path / "a"], tmp_path / "lib.sqlite", encoder, batch_size=2,
                  on_progress=lambda done, total: calls.append((done, total)), should_stop=lambda: len(calls) > 1)
    assert calls == [(0, 6), (2, 6)] and stopped.added == 2
    calls.clear()
    rest = run([tmp_path / "a"], tmp_path / "lib.sqlite", encoder, batch_size=2,
               on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (2, 4), (4, 4)] and (rest.added, rest.unchanged) == (4, 2)


def test_files_load_while_a_batch_encodes(tmp_path, encoder, monkeypatch):
    """Loading runs ahead of the encoder (in a loader thread here: workers=0), so the next
    batch's files are read while the first batch encodes, not after it."""
    from core.library import indexer

    write_meshes(tmp_path / "a", 8)
    loaded, real_load = [], indexer._load
    monkeypatch.setattr(indexer, "_load", lambda job: (real_load(job), loaded.append(job.path))[0])

    class Watching:
        """The encoder, waiting at its first batch (two files) until the second has loaded."""
        bundle, num_points, seen = encoder.bundle, encoder.num_points, []

        def embed_points(self, points, batch_size=16, **frame):
            deadline = time.monotonic() + 60  # a loader that waits for the encoder never gets there
            while not self.seen and len(loaded) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.seen.append(len(loaded))
            return encoder.embed_points(points, batch_size=batch_size, **frame)

    report = run([tmp_path / "a"], tmp_path / "lib.sqlite", Watching(), batch_size=2)
    assert report.added == 8 and Watching.seen[0] >= 4, "the second batch loads while the first encodes"


def test_two_cores_load_in_a_thread_and_more_cores_in_processes(tmp_path, encoder, monkeypatch):
    """The default loaders: on two cores or fewer a thread of this process (no pool to start,
    no cores taken from the encoder's threads), else one loader process per core but one."""
    from core.library import indexer

    for cores, processes in [(1, 0), (2, 0), (4, 3), (16, 15)]:
        monkeypatch.setattr(indexer.os, "cpu_count", lambda: cores)
        assert indexer._loader_processes(None, 100) == processes, cores
        assert indexer._loader_processes(3, 100) == 3 and indexer._loader_processes(0, 100) == 0
        assert indexer._loader_processes(None, indexer._POOL_MIN_JOBS - 1) == 0, "a few files: no pool"

    def no_pool(*args, **kwargs):
        raise AssertionError("no loader processes on two cores")

    monkeypatch.setattr(indexer.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(indexer, "ProcessPoolExecutor", no_pool)
    write_meshes(tmp_path / "a", 10)
    report = run([tmp_path / "a"], tmp_path / "lib.sqlite", encoder, workers=None)
    assert (report.added, report.failed) == (10, [])


def test_another_bundle_reembeds_and_never_mixes(tmp_path, encoder):
    from core.export import export_bundle
    from core.models import create_encoder

    write_meshes(tmp_path / "a", 3)
    db = tmp_path / "lib.sqlite"
    run([tmp_path / "a"], db, encoder)
    other = export_bundle(tmp_path / "other", model=create_encoder("pointbert-tiny", embed_dim=384, seed=1).eval(),
                          space="minilm")
    other_encoder = PointEncoder(other, device="cpu")
    assert bundle_id(other) != bundle_id(encoder.bundle)
    report = run([tmp_path / "a"], db, other_encoder)
    assert report.added + report.updated == 3, "a new bundle re-embeds every asset"
    with Library(db) as library:
        counts = library.spaces()
        assert counts[bundle_id(other)][1] == counts[bundle_id(encoder.bundle)][1] == 3
        assert not np.allclose(library.embeddings(bundle_id(other))[1], library.embeddings(bundle_id(encoder.bundle))[1])
    assert run([tmp_path / "a"], db, encoder).unchanged == 3, "the first bundle's rows are still there"


@pytest.mark.crash
def test_kill_9_mid_run_loses_nothing_committed(tmp_path, tiny_bundle):
    paths = write_meshes(tmp_path / "assets", 80, subdivisions=4)
    db = tmp_path / "lib.sqlite"
    command = [sys.executable, "-m", "cli", "index", str(tmp_path / "assets"), "--db", str(db),
               "--bundle", str(tiny_bundle.path), "--batch-size", "4", "--workers", "0", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    committed = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                committed = conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        except sqlite3.Error:
            committed = 0  # the schema is not there yet
        if committed >= 8:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 8 <= committed < 80, f"the kill must land mid-run (saw {committed} of 80 committed)"

    with Library(db) as library:
        assert library.integrity_check() == "ok"
        survived = len(library.assets())
        assert survived >= committed and survived % 4 == 0, "only whole batches are committed"
    rerun = subprocess.run(command[:-1] + ["--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with Library(db) as library:
        assert library.integrity_check() == "ok"
        rows = library.conn.execute("SELECT path FROM assets").fetchall()
        assert sorted(r[0] for r in rows) == sorted(str(p) for p in paths), "no asset lost or duplicated"
        assert library.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 80
    assert f'"unchanged": {survived}' in rerun.stdout, "the rerun resumes instead of starting over"


def write_bad_corpus(folder: Path) -> dict[str, str]:
    """Bad and odd files -> a word their recorded reason must contain ('' = must index fine)."""
    folder.mkdir()
    chair = (REPO / "examples" / "chair.glb").read_bytes()
    (folder / "empty.glb").write_bytes(b"")
    (folder / "truncated.glb").write_bytes(chair[: len(chair) // 2])
    (folder / "junk.ply").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "all_nan.obj").write_text("v nan nan nan\nv nan 0 0\nv 0 nan 0\nf 1 2 3\n")
    (folder / "some_nan.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan nan nan\nf 1 2 3\nf 1 2 4\n")
    (folder / "scene.blend").write_bytes(b"BLENDER-v300")
    unicode_dir = folder / "dossier été" / "tête de lit"
    unicode_dir.mkdir(parents=True)
    (unicode_dir / "chaise à bras.glb").write_bytes(chair)
    # A million faces, written as binary PLY directly (trimesh's exporter is slow at this size).
    grid = 708
    u, v = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    vertices = np.stack([u.ravel(), v.ravel(), np.sin(u.ravel() / 50)], axis=1)
    quad = (np.arange(grid - 1)[None, :] + grid * np.arange(grid - 1)[:, None]).ravel()
    faces = np.concatenate([np.stack([quad, quad + 1, quad + grid], 1),
                            np.stack([quad + 1, quad + grid + 1, quad + grid], 1)]).astype(np.int32)
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\nproperty float x\n"
              f"property float y\nproperty float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\n"
              "end_header\n").encode()
    records = np.empty(len(faces), dtype=[("n", "u1"), ("f", "<i4", 3)])
    records["n"], records["f"] = 3, faces
    (folder / "huge.ply").write_bytes(header + vertices.astype("<f4").tobytes() + records.tobytes())
    return {"empty.glb": "empty", "truncated.glb": "glb", "junk.ply": "ply", "all_nan.obj": "non-finite",
            "scene.blend": "Blender", "some_nan.obj": "", "chaise à bras.glb": "", "huge.ply": ""}


def test_bad_input_corpus_is_recorded_and_the_run_completes(tmp_path, encoder):
    expected = write_bad_corpus(tmp_path / "bad corpus")
    db = tmp_path / "lib.sqlite"
    report = run([tmp_path / "bad corpus"], db, encoder)
    failed = {Path(f["path"]).name: f["reason"] for f in report.failed}
    for name, word in expected.items():
        if word:
            assert word.lower() in failed.get(name, "").lower(), (name, failed.get(name))
        else:
            assert name not in failed, (name, failed[name])
    assert report.added == sum(1 for w in expected.values() if not w)
    assert {f["fault"] for f in report.failed} == {"file"}, "each of them is the file's fault"
    with Library(db) as library:
        assert {Path(e["path"]).name for e in library.errors()} == set(failed)
    again = run([tmp_path / "bad corpus"], db, encoder)
    assert (again.failed, again.known_errors, again.added) == ([], len(failed), 0), "known bad files are not retried"
    retried = run([tmp_path / "bad corpus"], db, encoder, retry_failed=True)
    assert ({Path(f["path"]).name for f in retried.failed}, retried.known_errors) == (set(failed), 0), \
        "unless asked to"
    shutil.rmtree(tmp_path / "bad corpus" / "dossier été")
    assert run([tmp_path / "bad corpus"], db, encoder).removed == 1


def test_blender_formats_index_through_the_worker(tmp_path, encoder):
    """A .blend with two marked assets (and one unmarked object), an .fbx and a .glb: four
    assets; the Blender ones sampled and thumbnailed (Workbench) in real bpy workers."""
    pytest.importorskip("bpy")
    from blender_files import MARKED, write_blend_files
    from core.library.search import Searcher

    blend, fbx = write_blend_files(tmp_path / "assets")
    shutil.copy(REPO / "examples" / "chair.glb", tmp_path / "assets" / "chair.glb")
    db = tmp_path / "lib.sqlite"
    report = run([tmp_path / "assets"], db, encoder)
    assert report.failed == [] and (report.seen, report.added) == (3, 4)
    with Library(db) as library:
        assets = {(Path(a["path"]).name, a["object"]): i for i, a in library.assets().items()}
        assert sorted(assets) == [("chair.glb", ""), ("cone.fbx", ""), *[("scene.blend", name) for name in MARKED]]
        for key in [("cone.fbx", ""), *[("scene.blend", name) for name in MARKED]]:
            png = Image.open(io.BytesIO(library.thumbnail(assets[key])))
            assert (png.format, png.size, png.mode) == ("PNG", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), "RGBA"), key
            covered = (np.asarray(png)[..., 3] > 127).mean()
            assert 0.05 < covered < 0.9, (key, covered)  # a framed object on a transparent background
        searcher = Searcher(library, encoder.bundle, device="cpu")
        hits = searcher.search(searcher.text_vector("a ball"), k=10)
        assert sorted((Path(h.path).name, h.object) for h in hits) == sorted(assets)
        for name in MARKED:  # each marked asset is its own vector, named FILE.blend#OBJECT: it finds itself first
            vector, own = searcher.like_vector(f"{blend}#{name}")
            assert own == assets[("scene.blend", name)]
            assert searcher.search(vector, k=1)[0].object == name
        with pytest.raises(LibraryError, match="FILE#OBJECT"):  # the file holds assets, it is not one
            searcher.like_vector(blend)
        with pytest.raises(LibraryError, match="no asset 'Nope'"):
            searcher.like_vector(f"{blend}#Nope")
    again = run([tmp_path / "assets"], db, encoder)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3), "a re-index redoes nothing"

    # The file saved again with no marked assets: one whole-file asset replaces the two.
    write_blend_files(tmp_path / "assets", mark=False, fbx=False)
    changed = run([tmp_path / "assets"], db, encoder)
    assert changed.failed == [] and (changed.added, changed.updated) == (0, 1)
    with Library(db) as library:
        assert sorted(a["object"] for a in library.assets().values() if a["path"] == str(blend)) == [""]
        assert library.integrity_check() == "ok"


def test_without_bpy_blender_files_say_what_to_install(tmp_path, encoder, monkeypatch):
    """bpy is installed here, so the probe is made to answer as on a machine without it; then
    it answers truly, as once the extra is installed."""
    import core.library.indexer as indexer
    from blender_files import write_blend_files

    write_blend_files(tmp_path / "assets")
    write_meshes(tmp_path / "assets", 1)
    monkeypatch.setattr(indexer, "blender_available", lambda: False)
    db = tmp_path / "lib.sqlite"
    report = run([tmp_path / "assets"], db, encoder)
    assert report.added == 1, "the rest indexes"
    assert sorted((Path(f["path"]).name, f["reason"]) for f in report.failed) == [
        ("cone.fbx", NEEDS_BLENDER), ("scene.blend", NEEDS_BLENDER)]
    assert "pip install 'ulip2[blender]'" in NEEDS_BLENDER
    with Library(db) as library:
        assert {e["fault"] for e in library.errors()} == {"run"}, "not the files' fault"
    again = run([tmp_path / "assets"], db, encoder)
    assert (len(again.failed), again.known_errors) == (2, 0), "so said again on the next run, not skipped"
    pytest.importorskip("bpy")
    monkeypatch.undo()
    installed = run([tmp_path / "assets"], db, encoder)
    assert (installed.failed, installed.added) == ([], 3), "once bpy is installed the files are read"
    with Library(db) as library:
        assert library.errors() == []


def test_a_version_1_library_migrates_keeping_its_rows(tmp_path):
    """A file written by schema 1 (one asset per path) opens as the current schema: assets,
    ids, embeddings and a person's tags kept, and a path may now hold several assets."""
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE assets (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, folder TEXT NOT NULL,
                format TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
                indexed_at REAL NOT NULL);
            CREATE TABLE embeddings (asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
                bundle TEXT NOT NULL, space TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL,
                PRIMARY KEY (asset_id, bundle));
            CREATE TABLE tags (asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
                vocab TEXT NOT NULL, label TEXT NOT NULL, score REAL NOT NULL, bundle TEXT NOT NULL,
                PRIMARY KEY (asset_id, vocab, label));
            INSERT INTO assets VALUES (7, '/lib/a.blend', '/lib', 'blend', 10, 1, 'aa', 0);
            INSERT INTO embeddings VALUES (7, 'b1', 'minilm', 2, x'0000803f00000000');
            INSERT INTO tags VALUES (7, 'user', 'hero prop', 1.0, 'b1');
        """)
    with Library(db) as library:
        assert library.get_meta("schema_version") == "5"
        assert library.assets() == {7: dict(path="/lib/a.blend", object="", folder="/lib", format="blend", size=10,
                                            sha256="aa")}
        ids, vectors = library.embeddings("b1")
        assert ids.tolist() == [7] and vectors.tolist() == [[1.0, 0.0]]
        assert library.user_tags() == {7: ["hero prop"]}
        library.write_batch("b1", "minilm", [AssetRecord("/lib/a.blend", 10, 1, "aa", np.ones(2), None, "Crate")],
                            [], [])
        assert sorted(a["object"] for a in library.assets().values()) == ["Crate"], \
            "marked assets replace the whole-file asset"
        assert library.user_tags() == {}, "its rows went with it (foreign keys are on again)"
        assert library.integrity_check() == "ok"


def test_a_version_4_library_keeps_its_failures_as_the_files_fault(tmp_path, tiny_bundle, capsys):
    """A library written before failures said whose fault they were opens as the current
    schema (by a reader too, where it may write), each failure kept as the file's: skipped,
    the summary saying how to retry, and read again with --retry-failed."""
    from cli.main import main

    folder = tmp_path / "assets"
    folder.mkdir()
    bad = folder / "empty.glb"
    bad.write_bytes(b"")
    db = tmp_path / "old.sqlite"
    with Library(db) as library:
        library.write_batch("b1", "minilm", [], [], [(str(bad), 0, bad.stat().st_mtime_ns, "empty file (0 bytes)",
                                                     "file")])
    conn = sqlite3.connect(db)  # version 4's tables: the same, but for errors.fault
    conn.execute("ALTER TABLE errors DROP COLUMN fault")
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Library(db, read_only=True) as library:
        assert library.get_meta("schema_version") == "5"
        assert library.errors() == [{"path": str(bad), "reason": "empty file (0 bytes)", "fault": "file"}]
    argv = ["index", str(folder), "--db", str(db), "--bundle", str(tiny_bundle.path), "--quiet", "--workers", "0"]
    assert main(argv) == 0
    assert "0 failed (1 known bad files skipped; retry them with --retry-failed)" in capsys.readouterr().out
    assert main([*argv, "--retry-failed"]) == 1
    out = capsys.readouterr().out
    assert "1 failed in" in out and "known bad" not in out


def test_a_failure_not_of_the_file_keeps_its_asset_and_tags(tmp_path):
    """Out of memory on a changed file says nothing of it: its asset, and a person's tags,
    stay until the next run reads it; a file's own failure removes them."""
    with Library(tmp_path / "lib.sqlite") as library:
        library.write_batch("b1", "minilm", [AssetRecord("/lib/a.glb", 10, 1, "aa", np.ones(2), None)], [], [])
        asset = library.asset_id("/lib/a.glb")
        library.set_user_tags(asset, ["hero prop"])
        library.write_batch("b1", "minilm", [], [], [("/lib/a.glb", 11, 2, "out of memory", "run")])
        assert (library.asset_id("/lib/a.glb"), library.user_tags()) == (asset, {asset: ["hero prop"]})
        assert library.errors() == [{"path": "/lib/a.glb", "reason": "out of memory", "fault": "run"}]
        library.write_batch("b1", "minilm", [], [], [("/lib/a.glb", 11, 2, "empty file (0 bytes)", "file")])
        assert (library.assets(), library.user_tags()) == ({}, {})


def _kill_first_blender_worker(timeout: float = 60) -> None:
    """SIGKILL the first Blender worker this process starts, as the kernel's out-of-memory
    killer ends a process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                worker = b"blender_addon.headless.worker" in (proc / "cmdline").read_bytes()
                parent = int(next(line.split()[1] for line in (proc / "status").read_text().splitlines()
                                  if line.startswith("PPid:")))
            except (OSError, ValueError):
                continue  # not a process, or one that ended meanwhile
            if worker and parent == os.getpid():
                os.kill(int(proc.name), signal.SIGKILL)
                return
        time.sleep(0.01)


def test_a_blender_worker_killed_by_the_system_is_not_the_files_fault(tmp_path, encoder):
    """A worker killed mid-file (SIGKILL, the out-of-memory killer's signal) fails the file
    by the run's fault: the next run reads it (here Blender finds it is no .blend: the
    file's fault), and the run after skips it."""
    pytest.importorskip("bpy")
    folder = tmp_path / "assets"
    folder.mkdir()
    (folder / "scene.blend").write_bytes(b"BLENDER-v300")
    killer = threading.Thread(target=_kill_first_blender_worker)
    killer.start()
    killed = run([folder], tmp_path / "lib.sqlite", encoder)
    killer.join()
    assert [(Path(f["path"]).name, f["fault"]) for f in killed.failed] == [("scene.blend", "run")]
    assert "(signal SIGKILL)" in killed.failed[0]["reason"]
    again = run([folder], tmp_path / "lib.sqlite", encoder)
    assert ([f["fault"] for f in again.failed], again.known_errors) == (["file"], 0), again.failed
    assert run([folder], tmp_path / "lib.sqlite", encoder).known_errors == 1


def test_alembic_is_indexed_through_blender_like_the_same_mesh_as_fbx(tmp_path, encoder):
    """The walk once left .abc out of the index (triplets read it): one registry of formats
    now sends it to the Blender worker, and the Cone exported as .abc embeds as its .fbx does
    (both y-up where they leave Blender)."""
    pytest.importorskip("bpy")
    from blender_files import write_blend_files

    write_blend_files(tmp_path / "assets", abc=True)
    (tmp_path / "assets" / "scene.blend").unlink()
    db = tmp_path / "lib.sqlite"
    report = run([tmp_path / "assets"], db, encoder)
    assert report.failed == [] and report.added == 2
    with Library(db) as library:
        names = {i: Path(a["path"]).name for i, a in library.assets().items()}
        asset_ids, vectors = library.embeddings(bundle_id(encoder.bundle))
    by_name = {names[int(i)]: vector for i, vector in zip(asset_ids, vectors)}
    assert sorted(by_name) == ["cone.abc", "cone.fbx"]
    assert float(by_name["cone.abc"] @ by_name["cone.fbx"]) > 0.99


def test_a_fifo_and_a_link_to_a_device_are_reported_not_read(tmp_path, encoder):
    """Only regular files are assets: a named pipe called .obj (reading it would block for
    ever) and a link to /dev/zero called .stl (endless bytes) are recorded with a reason,
    within seconds, and the good mesh beside them is indexed."""
    folder = tmp_path / "assets"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "chair.glb", folder / "chair.glb")
    os.mkfifo(folder / "pipe.obj")
    (folder / "zero.stl").symlink_to("/dev/zero")
    start = time.perf_counter()
    report = run([folder], tmp_path / "lib.sqlite", encoder)
    assert time.perf_counter() - start < 30
    failed = {Path(f["path"]).name: f["reason"] for f in report.failed}
    assert failed["pipe.obj"].startswith("not a regular file (a named pipe)")
    assert failed["zero.stl"].startswith("not a regular file (a character device)")
    assert report.added == 1
    again = run([folder], tmp_path / "lib.sqlite", encoder)
    assert again.failed == [] and again.known_errors == 2


def test_a_file_name_that_is_not_utf8_is_reported_and_the_run_goes_on(tmp_path, encoder, capsys):
    """Tried as a new user would: caf\\xe9_chair.glb (latin-1) stopped the whole run with a
    UnicodeEncodeError; now it is one error line naming it and the fix, every run."""
    folder = tmp_path / "assets"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "table.glb", folder / "table.glb")
    shutil.copy(REPO / "examples" / "chair.glb", os.fsdecode(bytes(folder) + b"/caf\xe9_chair.glb"))
    for _ in range(2):
        report = run([folder], tmp_path / "lib.sqlite", encoder)
        assert [f["path"] for f in report.failed] == [str(folder / "caf\\xe9_chair.glb")]
        assert "not valid UTF-8; rename it" in report.failed[0]["reason"]
    assert report.unchanged == 1
    assert "error: " + str(folder / "caf\\xe9_chair.glb") in capsys.readouterr().err


def test_another_programs_sqlite_file_is_refused_and_left_byte_identical(tmp_path):
    """Tried as a careful tester would: a browser's history.sqlite given as --db got 7 tables
    added and its schema stamped; a schema "4.1" ended in a ValueError traceback."""
    other = tmp_path / "history.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE visits (url TEXT, at INTEGER)")
    conn.execute("INSERT INTO visits VALUES ('https://example.org', 1)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(LibraryError, match="another program .tables visits., not a ulip2 library"):
        Library(other)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.sqlite"], "no -wal or -shm left beside it"
    odd = tmp_path / "odd.sqlite"
    with Library(odd):
        pass
    conn = sqlite3.connect(odd)
    conn.execute("UPDATE meta SET value = '4.1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryError, match="schema '4.1' is not one ulip2 wrote"):
        Library(odd)
    with Library(tmp_path / "new.sqlite"):  # a new file is still made
        pass
