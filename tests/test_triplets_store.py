"""The triplet store: layout, atomic writes, manifest replay, streaming reads (no bpy needed)."""

import json

import numpy as np
import pytest
from PIL import Image

from core.triplets import StoreError, TripletStore, key_for_arrays, key_for_file, view_name

VIEWS = 3


def write(store, key, rng, *, views=VIEWS, name="chair"):
    with store.new_record(key) as record:
        for i in range(views):
            Image.new("RGBA", (8, 8), (200, 0, 0, 255)).save(record.view_path(i))
        return record.commit(rng.normal(size=(100, 9)).astype(np.float32), {
            "source": {"path": f"/assets/{name}.glb", "object": name, "kind": "file"},
            "views": {"files": [view_name(i) for i in range(views)], "resolution": 8},
            "facts": {"name": name}})


def test_record_layout_and_stream(tmp_path, rng):
    store = TripletStore(tmp_path / "s", create=True)
    key = key_for_arrays("chair", [np.arange(9.0)])
    record = write(store, key, rng)
    assert record.path == tmp_path / "s" / "records" / key[:2] / key[2:4] / key
    points = record.points()
    assert points.shape == (100, 6) and points.dtype == np.float16
    assert [p.name for p in record.view_paths()] == ["view_00.png", "view_01.png", "view_02.png"]
    assert record.views()[0].mode == "RGBA" and record.captions is None
    assert list((tmp_path / "s" / "tmp").iterdir()) == []
    streamed = list(TripletStore(tmp_path / "s").records())
    assert [r.key for r in streamed] == [key] and streamed[0].meta["format_version"] == 1


def test_failed_write_leaves_no_record(tmp_path, rng):
    store = TripletStore(tmp_path / "s", create=True)
    with pytest.raises(StoreError, match="views not written"):
        _commit_without_views(store)
    assert list((tmp_path / "s" / "tmp").iterdir()) == []
    assert not (tmp_path / "s" / "records" / "ab").exists() and store.info()["records"] == 0


def _commit_without_views(store):
    with store.new_record("ab" * 32) as record:
        record.commit(np.zeros((4, 6)), {"source": {"path": None, "object": "x", "kind": "scene"},
                                         "views": {"files": [view_name(0)]}})


def test_captions_failures_and_info(tmp_path, rng):
    store = TripletStore(tmp_path / "s", create=True)
    a, b = "a" * 64, "b" * 64
    write(store, a, rng)
    write(store, b, rng, name="lamp")
    store.fail("c" * 64, "/assets/broken.glb", "cannot read as glb")
    block = {"captioner": "metadata", "space": "minilm", "views": [{"caption": f"v{i}"} for i in range(VIEWS)]}
    store.set_captions(a, block)
    # A kill in the middle of an append leaves a torn last line: readers skip it.
    with open(store.manifest, "a") as f:
        f.write('{"key": "dddd", "event": "do')
    info = TripletStore(tmp_path / "s").info()
    assert info["records"] == 2 and info["views"] == 2 * VIEWS
    assert info["captioned"] == 1 and info["uncaptioned"] == 1
    assert info["failures"] == [{"key": "c" * 64, "source": "/assets/broken.glb", "reason": "cannot read as glb"}]
    assert store.record(a).captions == ["v0", "v1", "v2"]
    assert [r.key for r in store.records(captioned=False)] == [b]


def test_redo_replaces_record(tmp_path, rng):
    store = TripletStore(tmp_path / "s", create=True)
    write(store, "e" * 64, rng, name="first")
    write(store, "e" * 64, rng, name="second")
    assert store.record("e" * 64).meta["facts"]["name"] == "second"


def test_store_errors(tmp_path):
    with pytest.raises(StoreError, match="not a triplet store"):
        TripletStore(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(StoreError, match="not empty"):
        TripletStore(tmp_path / "busy", create=True)
    store = TripletStore(tmp_path / "s", create=True)
    (store.root / "store.json").write_text(json.dumps({"format": "ulip2-triplets", "version": 99}))
    with pytest.raises(StoreError, match="version 99"):
        TripletStore(store.root)
    with pytest.raises(StoreError, match="hex"):
        store.record_path("../etc")


def test_keys_are_content_hashes(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\n")
    (tmp_path / "b.obj").write_text("v 0 0 0\n")
    assert key_for_file(tmp_path / "a.obj") == key_for_file(tmp_path / "b.obj")
    assert key_for_arrays("x", [np.zeros(3)]) != key_for_arrays("x", [np.zeros(3, np.float32)])
