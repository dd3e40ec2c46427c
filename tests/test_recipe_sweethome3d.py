"""The Sweet Home 3D recipe's parts on small inputs written here: no network, no debs."""

from __future__ import annotations

import collections
import json
import zipfile

import numpy as np
import pytest
import trimesh

from core.errors import Ulip2Error
from core.meshio import load_points
from training.recipes import d2
from training.recipes.properties import parse_properties
from training.evaluation import load_eval_set
from training.recipes.sweethome3d import (assign_classes, build_catalogue, classify, fetch, load_keyword_map, main,
                                          split_by_item)

CATALOGUE = (
    "# a comment\n"
    "! another comment\n"
    "id=Test#Models\n"
    "id#1=Test#chair\n"
    "name#1 = Caf\\u00e9 chair\n"          # \uXXXX escape, blanks around '='
    "tags#1=Seat, \\\n"                     # continued line: the next one's blanks go
    "       Wood\n"
    "category#1:Kitchen\n"                  # ':' separates too
    "model#1=/test/chair/chair.obj\n"
    "multiPartModel#1=true\n"
    "width#1=40\ndepth#1=45.5\nheight#1=90\n"
    "icon#1=/test/chair.png\n"
    "name#2=Lit d\xe9tente\n"               # a raw ISO-8859-1 byte
    "model#2=box.obj\n"                     # relative: beside the catalogue
    "modelRotation#2=1 0 0 0 0 1 0 -1 0\n"   # stored z-up: this stands it y-up
    "modelRotation#1=1 0 0 0 1 0 0 0 2\n"    # not a rotation: read as stored
    "key\\ with\\=escapes value\\\\\n"      # escaped blank and '=' in a key; an escaped backslash ends the line
).encode("iso-8859-1")


def test_properties_reader():
    props = parse_properties(CATALOGUE)
    assert props["name#1"] == "Café chair"
    assert props["tags#1"] == "Seat, Wood"
    assert props["category#1"] == "Kitchen"
    assert props["name#2"] == "Lit détente"
    assert props["key with=escapes"] == "value\\"
    assert not any(key.startswith(("#", "!")) for key in props)


def _archive(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _obj(mesh: trimesh.Trimesh) -> bytes:
    return mesh.export(file_type="obj").encode()


def test_catalogue_records_and_extraction(tmp_path):
    root = tmp_path / "assets"
    root.mkdir()
    _archive(root / "test.sh3f", {
        "PluginFurnitureCatalog.properties": CATALOGUE,
        "PluginFurnitureCatalog_fr.properties": b"name#1=Chaise\n",  # a translation: not a catalogue
        "test/chair/chair.obj": _obj(trimesh.creation.box((0.4, 0.45, 0.9))),
        "test/chair/chair.mtl": b"newmtl a\nKd 1 0 0\n",
        "box.obj": _obj(trimesh.creation.box()),
        "test/chair.png": b"",
    })
    out = tmp_path / "out"
    records = build_catalogue(root, out)
    assert [r["id"] for r in records] == ["Test#chair", "test.sh3f#2"]
    chair, box = records
    assert chair["tags"] == ["Seat", "Wood"] and chair["size_cm"] == [40.0, 45.5, 90.0]
    assert chair["model"] == "test/chair/chair.obj" and chair["icon"] == "test/chair.png"
    assert chair["mesh"] == "models/Test_chair/chair.obj"
    assert sorted(p.name for p in (out / "models" / "Test_chair").iterdir()) == ["chair.mtl", "chair.obj"]
    assert box["mesh"] == "models/test.sh3f_2/box.obj" and box["name"] == "Lit détente"
    assert load_points(out / chair["mesh"], 64).shape == (64, 9)
    assert chair["model_rotation"] is None and box["model_rotation"] == [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
    # A rerun keeps what is extracted (a changed archive does not overwrite it).
    (out / chair["mesh"]).write_text("kept")
    build_catalogue(root, out)
    assert (out / chair["mesh"]).read_text() == "kept"


def test_prepare_from_an_assets_folder(tmp_path, capsys):
    shapes = {"Chair": trimesh.creation.box((0.5, 0.5, 1.0)), "Lamp": trimesh.creation.icosphere(2),
              "Rock": trimesh.creation.icosphere(1)}
    catalogue, members = [], {}
    for n, name in enumerate(["Chair"] * 6 + ["Lamp"] * 6 + ["Rock"], start=1):
        catalogue.append(f"id#{n}=T#{n}\nname#{n}={name}\nmodel#{n}=/m{n}.obj\n")
        members[f"m{n}.obj"] = _obj(shapes[name])
    members["PluginFurnitureCatalog.properties"] = "".join(catalogue).encode()
    (tmp_path / "assets").mkdir()
    _archive(tmp_path / "assets" / "lib.sh3f", members)
    out = tmp_path / "out"
    assert main(["prepare", "--out", str(out), "--assets", str(tmp_path / "assets"), "--points", "256"]) == 0
    printed = capsys.readouterr().out
    assert "models: 13  labelled: 12 in 2 classes (train 10, test 2)" in printed
    assert "D2 nearest-neighbour top-1 on the test split: 1.0000" in printed
    test = load_eval_set(out / "test.csv", 256)
    assert sorted(test.labels) == ["chair", "lamp"] and not test.failed
    records = json.loads((out / "catalogue.json").read_text())["records"]
    assert [r["split"] for r in records if r["name"] == "Rock"] == [None]


def test_zip_members_outside_the_model_folder_are_refused(tmp_path):
    root = tmp_path / "assets"
    root.mkdir()
    _archive(root / "evil.sh3f", {
        "PluginFurnitureCatalog.properties": b"model#1=/m/m.obj\nmultiPartModel#1=true\n",
        "m/m.obj": _obj(trimesh.creation.box()),
        "m/../../escaped.txt": b"gotcha",
    })
    with pytest.raises(Ulip2Error, match="refusing zip member 'm/../../escaped.txt'"):
        build_catalogue(root, tmp_path / "out")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_missing_archives_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(Ulip2Error, match="no Sweet Home 3D catalogues.*--assets"):
        build_catalogue(tmp_path, tmp_path / "out")


def test_fetch_without_apt_get_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(Ulip2Error, match="apt-get not found: on non-Debian systems pass --assets"):
        fetch(tmp_path / "out")
    assert not list((tmp_path / "out" / "debs").glob("*.deb"))


@pytest.mark.parametrize("name, label", [
    ("Armchair", "chair"), ("Bar stool", "stool"), ("Wheelchair", None), ("Coffee table", "table"),
    ("Desk lamp", "lamp"), ("Table fan", None), ("Bedside table", "table"), ("Bunk bed", "bed"),
    ("Washbasin with cabinet", "sink"), ("Sink cabinet", "cabinet"), ("Round door frame", "door"),
    ("Window blind", None), ("Seat Leon", "car"), ("Class seat", "chair"), ("Hot dog", None),
    ("Siamese cat", "animal"), ("Bathmat", "rug"), ("Fridge & freezer", "fridge"), ("Sunglasses", None),
    ("Blue light source", None), ("Double-hung window", "window"),
])
def test_keyword_classes(name, label):
    assert classify(name, load_keyword_map()) == label


def test_small_classes_are_dropped():
    names = {f"c{i}": "Chair" for i in range(5)} | {f"s{i}": "Sofa" for i in range(4)} | {"x": "Rock"}
    labels, dropped = assign_classes(names, load_keyword_map())
    assert labels == {f"c{i}": "chair" for i in range(5)} and dropped == {"sofa": 4}


def test_split_is_deterministic_and_stratified():
    labels = {f"{c}{i}": c for c, n in (("a", 10), ("b", 5), ("c", 23)) for i in range(n)}
    split = split_by_item(labels, 0.2, seed=0)
    assert split == split_by_item(dict(reversed(labels.items())), 0.2, seed=0)
    tests = collections.Counter(labels[i] for i, s in split.items() if s == "test")
    assert tests == {"a": 2, "b": 1, "c": 5}
    assert split != split_by_item(labels, 0.2, seed=1)
    # Adding items to one class leaves another class's split alone.
    more = labels | {f"a{i}": "a" for i in range(10, 20)}
    assert {i: s for i, s in split_by_item(more, 0.2).items() if labels.get(i) == "c"} == \
           {i: s for i, s in split.items() if labels[i] == "c"}


def _d2_of(mesh: trimesh.Trimesh, path) -> np.ndarray:
    mesh.export(path)
    return d2.d2_descriptor(load_points(path, 1024, seed=0)[:, :3])


def test_d2_ignores_pose_and_size_and_tells_shapes_apart(tmp_path):
    box = trimesh.creation.box((0.3, 0.4, 2.0))
    moved = box.copy()
    moved.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 2, 3]))
    moved.apply_scale(5.0)
    moved.apply_translation([3, -1, 2])
    sphere = trimesh.creation.icosphere(subdivisions=3)
    reference = _d2_of(box, tmp_path / "box.ply")
    assert reference.shape == (d2.BINS,) and reference.sum() == pytest.approx(1.0)
    same = np.abs(reference - _d2_of(moved, tmp_path / "moved.ply")).sum()
    different = np.abs(reference - _d2_of(sphere, tmp_path / "sphere.ply")).sum()
    assert same < 0.02 and different > 0.3


def test_d2_nearest_neighbour_and_cache(tmp_path):
    shapes = {"sphere1": trimesh.creation.icosphere(2), "sphere2": trimesh.creation.icosphere(3),
              "rod1": trimesh.creation.box((0.2, 0.2, 3)), "rod2": trimesh.creation.cylinder(0.1, 3)}
    meshes = {}
    for key, mesh in shapes.items():
        meshes[key] = tmp_path / f"{key}.ply"
        mesh.export(meshes[key])
    meshes["bad"] = tmp_path / "bad.obj"
    meshes["bad"].write_text("not a mesh\n")
    found, failures = d2.descriptors(meshes, tmp_path / "cache", points=512)
    assert set(found) == set(shapes) and set(failures) == {"bad"}
    top1 = d2.nearest_neighbour_top1([found["sphere1"], found["rod1"]], ["sphere", "rod"],
                                     [found["sphere2"], found["rod2"]], ["sphere", "rod"])
    assert top1 == 1.0
    # Cached descriptors are reused: a deleted mesh still has its descriptor.
    meshes["rod1"].unlink()
    again, _ = d2.descriptors(meshes, tmp_path / "cache", points=512)
    np.testing.assert_array_equal(again["rod1"], found["rod1"])


def _fake_catalogue(data):
    """Three trainable items and one held out; a fourth trainable record's mesh is a byte copy
    of the held-out one's, so only its content can tell it apart."""
    shapes = {"chair": trimesh.creation.box((0.5, 0.5, 1.0)), "lamp": trimesh.creation.icosphere(2),
              "table": trimesh.creation.box((1.2, 0.8, 0.1)), "sofa": trimesh.creation.box((2.0, 0.9, 0.8))}
    records = []
    for n, (name, split) in enumerate([("chair", "train"), ("lamp", None), ("table", "train"), ("sofa", "test")]):
        folder = data / "models" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.obj").write_bytes(_obj(shapes[name]))
        records.append({"id": f"T#{n}", "name": f"Cosy {name}", "tags": ["Blend Swap", "Seat"], "category": "Living room",
                        "size_cm": [50.0, 40.0, 90.0], "mesh": f"models/{name}/{name}.obj", "load_error": None,
                        "class": name, "split": split})
    twin = data / "models" / "twin"
    twin.mkdir()
    (twin / "twin.obj").write_bytes((data / "models" / "sofa" / "sofa.obj").read_bytes())
    records.append({**records[3], "id": "T#twin", "name": "Sofa copy", "mesh": "models/twin/twin.obj", "split": None})
    return records


def test_default_model_triplets_render_caption_and_keep_held_out_items_out(tmp_path):
    """The recipe's triplets: real Blender renders (2 views at 32 px), metadata captions naming
    the catalogue item and its size, the catalogue's texts beside them; no held-out geometry in the store or
    its features, even under another record's name; a rerun does nothing."""
    pytest.importorskip("bpy")
    from core.triplets import TripletStore, key_for_file
    from training.features import load_or_build_features
    from training.recipes.default_model import build_store, captions_for, held_out_keys

    data, store_root = tmp_path / "data", tmp_path / "work" / "store"
    records = _fake_catalogue(data)
    built = build_store(data, store_root, records, views=2, resolution=32, workers=1)
    assert built == {"trainable": 3, "skipped_done": 0, "written": 3, "failed": 0, "captioned_now": 3}
    store = TripletStore(store_root)
    stored = {r.key: r for r in store.records(captioned=True)}
    keys = {r["name"]: key_for_file(data / r["mesh"]) for r in records}
    assert set(stored) == {keys["Cosy chair"], keys["Cosy lamp"], keys["Cosy table"]}
    assert not set(stored) & held_out_keys(data, records)
    chair = stored[keys["Cosy chair"]]
    assert len(chair.view_paths()) == 2 and chair.meta["views"]["engine"] == "CYCLES"
    block = chair.meta["captions"]
    assert block["captioner"] == "metadata" and block["vision_model"] is False and len(block["views"]) == 2
    assert all("cosy chair" in view["caption"] for view in block["views"])
    # The catalogue's size in cm, not the OBJ's unitless extents read as metres.
    candidates = [c["text"] for view in block["views"] for c in view["candidates"]]
    assert any(text.endswith("cosy chair, about 0.9 m tall") for text in candidates)
    assert block["texts"] == captions_for(records[0]) == [
        "a cosy chair", "Cosy chair, living room furniture", "Cosy chair: seat",
        "a cosy chair 50 cm wide, 40 cm deep and 90 cm high"]
    assert chair.captions == [view["caption"] for view in block["views"]] + block["texts"]

    features = load_or_build_features(store_root, "minilm")
    assert sorted(features.ids) == sorted(stored) and len(features.texts_of(0)) == 2 + 4

    events = (store_root / "manifest.jsonl").read_text()
    assert build_store(data, store_root, records, views=2, resolution=32, workers=1)["written"] == 0
    assert (store_root / "manifest.jsonl").read_text() == events


def test_blender_points_of_obj_files_train_in_the_frame_the_runtime_reads(tmp_path):
    """Blender's OBJ importer turns y-up into z-up; the record's points are turned back where
    they leave Blender, into the file's frame, the one `ulip2 eval` and `ulip2 index` read OBJ
    files in (trimesh), and the record says so."""
    pytest.importorskip("bpy")
    from core.triplets import TripletStore, key_for_file
    from core.triplets.build import render_files

    # Long in y, lopsided on every axis: a swapped axis shows in the spreads, a flipped one in
    # the third moments (points are centred, so their means are all 0).
    mesh = trimesh.util.concatenate([trimesh.creation.box((1.0, 2.0, 0.5)),
                                     trimesh.creation.box((0.8, 0.8, 0.8), trimesh.transformations.translation_matrix(
                                         (1.2, 1.8, 0.9)))])
    path = tmp_path / "lopsided.obj"
    path.write_bytes(_obj(mesh))
    store = TripletStore(tmp_path / "store", create=True)
    assert render_files(store, [path], {"count": 1, "resolution": 16})["written"] == 1
    record = store.record(key_for_file(path))
    assert record.meta["points"]["frame"] == "y-up"
    upright = record.points()[:, :3].astype(np.float32)
    reference = load_points(path, 10_000, seed=0)[:, :3]
    np.testing.assert_allclose(upright.std(axis=0), reference.std(axis=0), atol=0.01)
    # Third moments here are about +-0.007; a flipped axis turns one's sign.
    np.testing.assert_allclose((upright ** 3).mean(axis=0), (reference ** 3).mean(axis=0), atol=0.002)


@pytest.mark.train
def test_default_model_pack_validation_run_and_ranking(tmp_path):
    """The recipe's pack from its trimesh point store (one store standing in for both here):
    no held-out item or its byte-identical twin in it, a validation item sampled as `ulip2
    eval` samples it; one validation run (pointbert-mini, random init, 1 epoch of batch 2)
    scores it; ranking keeps only configurations run with every seed."""
    from core.triplets import key_for_file
    from training.recipes import selection
    from training.recipes.default_model import build_point_store, captions_for, held_out_keys

    data, store = tmp_path / "data", tmp_path / "work" / "point-store"
    records = _fake_catalogue(data)
    (data / "catalogue.json").write_text(json.dumps({"records": records}))
    assert build_point_store(data, store, records) == {"trainable": 3, "written": 3}
    assert build_point_store(data, store, records)["written"] == 0
    pack_path = selection.write_pack(data, store, store, tmp_path / "work" / "pack.npz", "minilm")
    pack, meta = selection.load_pack(pack_path)
    assert len(meta["ids"]) == 3 and not set(meta["ids"]) & held_out_keys(data, records)
    assert pack["points_points"].shape == (3, selection.PACK_POINTS, 6) and pack["val_mask"].sum() == 1
    assert meta["classnames"] == ["chair", "lamp", "sofa", "table"] and pack["class_vectors"].shape == (4, 384)
    val = meta["ids"].index(next(k for k, m in zip(meta["ids"], pack["val_mask"]) if m))
    val_record = next(r for r in records if r["split"] == "train" and key_for_file(data / r["mesh"]) == meta["ids"][val])
    np.testing.assert_allclose(pack["val_points_1024"][0], load_points(data / val_record["mesh"], 1024, seed=0)[:, :6])
    # The 'points' source reads the catalogue texts; 'mixed' counts a repeated caption once.
    features = selection.source_features(pack, meta, "points", np.ones(3, bool))
    assert len(features.texts_of(0)) == len(captions_for(records[0]))
    assert len(selection.source_features(pack, meta, "mixed", np.ones(3, bool)).texts_of(0)) == len(features.texts_of(0))

    job = {"source": "points", "encoder": "pointbert-mini", "epochs": 1, "lr": 1e-3, "seed": 0, "batch_size": 2}
    result = selection.train(pack_path, job, tmp_path / "run", device="cpu", validate=True, show_progress=False)
    assert result["train_objects"] == 2 and result["curve"][-1]["epoch"] == 1
    assert result["val_top1"] in (0.0, 1.0) and result["val_top5"] == 1.0  # one item, four classes
    ranked = selection.rank([result | {"seed": s} for s in selection.SEEDS] + [result | {"lr": 1.0}])
    assert ranked["chosen"] == {k: job[k] for k in selection.CHOSEN} and len(ranked["table"]) == 1

    # The selection itself: each seed in worker processes, a line per run, the ranking on disk.
    config = {k: v for k, v in job.items() if k != "seed"}
    ranked = selection.select(pack_path, tmp_path / "selection", device="cpu", workers=2, configs=[config])
    lines = (tmp_path / "selection" / "selection.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["seed"] for line in lines) == list(selection.SEEDS)
    assert json.loads((tmp_path / "selection" / "selection.json").read_text()) == ranked
    assert ranked["runs"] == 3 and ranked["table"][0]["seeds"] == 3


def test_default_model_stages_name_a_missing_input_and_the_fix(tmp_path, capsys):
    from training.recipes.default_model import main as recipe

    assert recipe(["train", "--pack", str(tmp_path / "none.npz"), "--out", str(tmp_path / "run")]) == 1
    assert "none.npz: not a readable pack" in capsys.readouterr().err
    assert recipe(["pack", "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work")]) == 1
    assert "sweethome3d prepare --out" in capsys.readouterr().err


def test_the_corpus_source_stands_a_model_stored_z_up_upright(tmp_path):
    """modelRotation reaches the corpus: a tall box stored z-up is read y-up."""
    from training.recipes.sources.sweethome3d import _load

    (tmp_path / "tall.obj").write_bytes(_obj(trimesh.creation.box((1, 2, 3))))
    as_stored, = _load(tmp_path / "tall.obj")
    turned, = _load(tmp_path / "tall.obj", [[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert np.allclose(as_stored.extents, (1, 2, 3)) and np.allclose(turned.extents, (1, 3, 2))
