"""The artist-facing panels in a clean Blender: the built extension zip installs into a fresh
bpy (BLENDER_USER_RESOURCES under tmp_path), then auto-tag, caption, library search and
append run there, with onnxruntime only: torch is never imported in that process.

The bundle is pointbert-tiny with RANDOM weights (tests/conftest.py) and the real minilm
text tower exported into it, so tags and captions here carry no meaning: the tests check
structure (k tags from the vocabulary, no duplicates, a caption from the bank, one undo
step), not that a cube is called a box.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

from blender_addon.build import build_extension  # noqa: E402
from core.spaces.vocabularies import load_bank  # noqa: E402

VOCABULARY = ["chair", "table", "lamp", "sofa", "vase", "bottle", "car", "airplane"]
K = 3


@pytest.fixture(scope="session")
def text_bundle(tiny_bundle, tmp_path_factory):
    """A copy of the session's tiny bundle with the minilm text tower (about 90 MB): exported
    once per test session."""
    from core.export import add_text_tower

    path = tmp_path_factory.mktemp("panel-bundles") / "tiny-with-text"
    shutil.copytree(tiny_bundle.path, path)
    return add_text_tower(path)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory):
    """The extension as users install it; no runtime wheels: this bpy's Python has onnxruntime and tokenizers."""
    return build_extension(tmp_path_factory.mktemp("extension"), runtime_wheels=False)[0]


@pytest.fixture
def vocabulary(tmp_path):
    """A small vocabulary file (VOCABULARY, one label a line)."""
    path = tmp_path / "vocabulary.txt"
    path.write_text("\n".join(VOCABULARY) + "\n")
    return path


@pytest.fixture(scope="session")
def library(text_bundle, tmp_path_factory):
    """A library of four small meshes (glb, ply, obj, stl) indexed with the text bundle, thumbnails included."""
    from core.library.indexer import index_paths
    from core.library.store import Library
    from core.runtime import PointEncoder

    from meshes import write_meshes

    root = tmp_path_factory.mktemp("library")
    paths = write_meshes(root / "assets", 8)
    db = root / "library.sqlite"
    with Library(db) as lib:
        index_paths([root / "assets"], lib, PointEncoder(text_bundle, device="cpu"), workers=0)
    return db, sorted(str(p.resolve()) for p in paths)


def run_bpy(tmp_path, *args, timeout=600):
    """A fresh Python with bpy, outside the checkout (so core comes from the extension's
    wheel, not this environment), with Blender's user folder and caches under tmp_path."""
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user"),
           "ULIP2_CACHE_DIR": str(tmp_path / "cache"), "ULIP2_TEXT_CACHE": "1"}
    done = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


SCENE = r"""
import json, sys, traceback
from contextlib import contextmanager
import bpy

zip_path, bundle, db, vocabulary, blend_asset, no_text_bundle, server, path_map = sys.argv[1:9]
assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                enable_on_install=True) == {"FINISHED"}
prefs = bpy.context.preferences.addons["bl_ext.user_default.ulip2"].preferences
prefs.bundle, prefs.library, prefs.device = bundle, db, "cpu"
prefs.vocabulary, prefs.vocabulary_file, prefs.tags_per_object = "FILE", vocabulary, %(k)d
out, failed = {}, {}

@contextmanager
def step(name):
    # One step of the session: what it raised is recorded under its name and the session
    # goes on, so that each behaviour's test reports its own outcome.
    try:
        yield
    except Exception:
        failed[name] = traceback.format_exc()

def error_of(operator, **properties):
    try:
        operator(**properties)
    except RuntimeError as exc:  # an operator's ERROR report, raised to the script
        return str(exc)

library = prefs.library
with step("no_text"):
    prefs.bundle = no_text_bundle
    out["no_text"] = error_of(bpy.ops.ulip2.auto_tag)
with step("no_library"):
    prefs.bundle, prefs.library = bundle, ""
    out["no_library"] = error_of(bpy.ops.ulip2.search_library, query="a chair")
prefs.bundle, prefs.library = bundle, library

with step("blend_asset"):
    # A .blend holding one marked asset away from the origin, for append and link.
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the preferences
    bpy.ops.mesh.primitive_cylinder_add(location=(5, 5, 0))
    stool = bpy.context.active_object
    stool.name = "Stool"
    stool.asset_mark()
    bpy.data.libraries.write(blend_asset, {stool})

with step("scene"):
    # The artist's scene: two marked assets, a plain object, and a light (nothing to sample).
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the preferences
    bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
    bpy.context.active_object.name = "Crate"
    bpy.context.active_object.asset_mark()
    bpy.context.active_object.asset_data.tags.new("mine")  # an artist's own tag survives
    bpy.ops.mesh.primitive_uv_sphere_add(location=(3, 0, 0))
    bpy.context.active_object.name = "Ball"
    bpy.context.active_object.asset_mark()
    bpy.ops.mesh.primitive_cone_add(location=(0, 4, 0))
    bpy.context.active_object.name = "Cone"
    bpy.ops.object.light_add(location=(0, 0, 5))
    bpy.ops.object.select_all(action="SELECT")

def labels():
    objects = bpy.data.objects
    return {"Crate": [t.name for t in objects["Crate"].asset_data.tags], "Crate.d": objects["Crate"].asset_data.description,
            "Ball": [t.name for t in objects["Ball"].asset_data.tags], "Ball.d": objects["Ball"].asset_data.description,
            "Cone": list(objects["Cone"].get("ulip2_tags", [])), "Cone.d": objects["Cone"].get("ulip2_caption")}

with step("tag"):
    bpy.ops.ed.undo_push(message="before auto-tag")
    out["before"] = labels()
    # (EXEC_DEFAULT, undo=True): the way a button press runs it, pushing the operator's undo step.
    out["tag"] = sorted(bpy.ops.ulip2.auto_tag("EXEC_DEFAULT", True))
    out["first"] = labels()
with step("undo"):
    bpy.ops.ed.undo()
    out["undone"] = labels()
with step("redo"):
    bpy.ops.ed.redo()
    out["redone"] = labels()
with step("second"):
    bpy.ops.object.select_all(action="SELECT")
    bpy.ops.ulip2.auto_tag("EXEC_DEFAULT", True)
    out["second"] = labels()

with step("caption"):
    bpy.ops.object.select_all(action="DESELECT")
    bpy.data.objects["Cone"].select_set(True)
    del bpy.data.objects["Cone"]["ulip2_caption"]
    out["caption"] = sorted(bpy.ops.ulip2.caption())
    out["cone_caption"] = bpy.data.objects["Cone"].get("ulip2_caption")

with step("search"):
    search = bpy.context.window_manager.ulip2_search
    search.query, search.count = "a wooden box", 3
    out["search"] = sorted(bpy.ops.ulip2.search_library())
    from bl_ext.user_default.ulip2.ui.library_search import preview
    out["results"] = [{"path": r.path, "score": r.score, "thumbnail": r.thumbnail,
                       "preview": list(preview(r.thumbnail).image_size)} for r in search.results]

with step("served"):
    # The studio's server searches; this Blender has no text tower and no library file.
    prefs.bundle, prefs.library, prefs.server, prefs.path_map = no_text_bundle, "", server, path_map
    search.query, search.count = "a wooden box", 3
    out["served"] = sorted(bpy.ops.ulip2.search_library())
    out["served_results"] = [{"path": r.path, "score": r.score, "thumbnail": r.thumbnail} for r in search.results]
    prefs.bundle, prefs.library, prefs.server, prefs.path_map = bundle, library, "", ""

def placed(before):
    new = [o for o in bpy.data.objects if o.name not in before and (o.parent is None or o.parent.name in before)]
    return [{"name": o.name, "at": [round(v, 4) for v in o.matrix_world.translation], "linked": o.library is not None,
             "instance": o.instance_collection.name if o.instance_collection else None,
             "instanced_linked": [x.library is not None for x in o.instance_collection.objects]
                                 if o.instance_collection else []} for o in new]

bpy.context.scene.cursor.location = (2.0, -3.0, 1.5)
with step("append"):
    before = {o.name for o in bpy.data.objects}
    out["append"] = sorted(bpy.ops.ulip2.append_result())  # the active search result: the server's
    out["appended"] = placed(before)
with step("append_blend"):
    before = {o.name for o in bpy.data.objects}
    out["append_blend"] = sorted(bpy.ops.ulip2.append_result(path=blend_asset))
    out["appended_blend"] = placed(before)
with step("link_blend"):
    before = {o.name for o in bpy.data.objects}
    out["link_blend"] = sorted(bpy.ops.ulip2.append_result(path=blend_asset, link=True))
    out["linked_blend"] = placed(before)

with step("stopped"):
    # Stopping (Esc in the modal operator) closes the steps between two objects: the objects
    # done keep their labels, the rest are not touched.
    from bl_ext.user_default.ulip2.scene.inference import models_for
    from bl_ext.user_default.ulip2.scene.labels import Outcome, label_objects
    outcome = Outcome()
    steps = label_objects(models_for(bundle, "cpu"),
                          [bpy.data.objects[n] for n in ("Crate", "Ball", "Cone")], outcome, vocabulary=vocabulary, k=2)
    for done, total, message in steps:
        if message.startswith("labelling") and done == 1:
            break
    steps.close()
    out["stopped"] = [sorted(outcome.labelled), outcome.total]

import core.runtime
out["core"] = core.runtime.__file__
out["onnxruntime"] = "onnxruntime" in sys.modules
out["torch"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "open_clip"))
print(json.dumps({"out": out, "failed": failed}))
""" % {"k": K}

CURSOR = [2.0, -3.0, 1.5]


@pytest.fixture(scope="module")
def session(extension_zip, text_bundle, library, tiny_bundle, tmp_path_factory):
    """The artist's session, run once for this module in one clean bpy (SCENE): the zip
    installed, then errors, auto-tag, undo, caption, search, append and stop, each step's
    outcome recorded under its name. The tests below judge one behaviour each. The library is
    also served (`ulip2 serve` on loopback) for the search through the server."""
    from serve.app import create_app
    from serve.hosts import LOOPBACK_NAMES
    from served import serving

    folder = tmp_path_factory.mktemp("panels")
    vocabulary = folder / "vocabulary.txt"
    vocabulary.write_text("\n".join(VOCABULARY) + "\n")
    script = folder / "scene.py"
    script.write_text(SCENE)
    db, indexed = library
    # The server's paths reach this "machine" through a mirror of the asset folder.
    served_root = Path(indexed[0]).parent
    mirror = folder / "mirror"
    shutil.copytree(served_root, mirror)
    with serving(create_app(db, text_bundle, allowed_hosts=LOOPBACK_NAMES)) as server:
        done = run_bpy(folder, str(script), str(extension_zip), str(text_bundle.path), str(db), str(vocabulary),
                       str(folder / "stool.blend"), str(tiny_bundle.path), server, f"{served_root}={mirror}")
    return SimpleNamespace(folder=folder, indexed=indexed, mirror=mirror, served_root=served_root,
                           out=done["out"], failed=done["failed"])


def outcome(session, *steps):
    """The session's record, once the steps this behaviour rests on ran without raising."""
    for name in steps:
        if name in session.failed:
            pytest.fail(f"the {name!r} step raised in Blender:\n{session.failed[name]}", pytrace=False)
    return session.out


# A bundle without a text tower, or no library set: the error says what to do.

def test_auto_tag_with_a_bundle_without_text_tower_names_the_command_that_adds_one(session, tiny_bundle):
    out = outcome(session, "no_text")
    assert f"ulip2 models add-text {tiny_bundle.path}" in out["no_text"], out["no_text"]


def test_search_with_no_library_set_says_how_to_make_one(session):
    out = outcome(session, "no_library")
    assert "no index database set" in out["no_library"] and "ulip2 index FOLDER --db FILE" in out["no_library"]


# Auto-tag (random weights, see the module docstring: structure, not meaning).

def test_auto_tag_gives_every_object_k_distinct_tags_of_the_vocabulary(session):
    """Asset tags on the marked assets, custom properties on the plain object."""
    out = outcome(session, "scene", "tag")
    assert out["tag"] == ["FINISHED"]
    assert out["before"] == {"Crate": ["mine"], "Crate.d": "", "Ball": [], "Ball.d": "", "Cone": [], "Cone.d": None}
    for name in ("Crate", "Ball", "Cone"):
        tags = [t for t in out["first"][name] if t != "mine"]
        assert len(tags) == K and set(tags) <= set(VOCABULARY) and len(set(tags)) == K, (name, out["first"][name])


def test_auto_tag_keeps_the_artists_own_tag_first(session):
    first = outcome(session, "scene", "tag")["first"]
    assert first["Crate"][0] == "mine" and len(first["Crate"]) == 1 + K


def test_auto_tag_writes_a_caption_of_the_bank_on_every_object(session):
    """In the asset's description; in a custom property on the plain object."""
    first = outcome(session, "scene", "tag")["first"]
    bank = set(load_bank()[1])
    for name in ("Crate", "Ball", "Cone"):
        assert first[f"{name}.d"] in bank, (name, first[f"{name}.d"])


def test_one_undo_takes_auto_tag_back_on_every_object_at_once(session):
    out = outcome(session, "scene", "tag", "undo")
    assert out["undone"] == out["before"]


def test_redo_brings_auto_tag_back(session):
    out = outcome(session, "scene", "tag", "undo", "redo")
    assert out["redone"] == out["first"]


def test_a_second_auto_tag_adds_no_duplicate(session):
    out = outcome(session, "scene", "tag", "second")
    assert out["second"] == out["first"]


def test_caption_writes_a_caption_of_the_bank(session):
    out = outcome(session, "scene", "caption")
    assert out["caption"] == ["FINISHED"] and out["cone_caption"] in set(load_bank()[1])


def test_stopping_between_objects_keeps_the_labels_of_those_done(session):
    out = outcome(session, "scene", "stopped")
    assert out["stopped"] == [["Crate"], 3]


# Library search.

def test_search_lists_results_of_the_library_best_first(session):
    out = outcome(session, "search")
    assert out["search"] == ["FINISHED"]
    results = out["results"]
    assert len(results) == 3 and all(r["path"] in session.indexed for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_search_results_show_their_thumbnails_as_previews(session):
    results = outcome(session, "search")["results"]
    assert results
    for result in results:
        thumbnail = Path(result["thumbnail"])
        assert thumbnail.is_file() and thumbnail.is_relative_to(session.folder / "blender-user")
        assert thumbnail.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert result["preview"] == [128, 128]  # loaded by bpy.utils.previews (icon ids exist only with a UI)


def test_search_through_the_library_server_needs_no_text_tower_and_maps_the_paths(session):
    """The same query through `ulip2 serve`, with a bundle without a text tower and no library
    file set: the file's results, in order, each path through the mapping, previews written."""
    out = outcome(session, "search", "served")
    assert out["served"] == ["FINISHED"]
    served, local = out["served_results"], out["results"]
    assert [str(session.served_root / Path(r["path"]).relative_to(session.mirror)) for r in served] == \
        [r["path"] for r in local]
    assert [r["score"] for r in served] == pytest.approx([r["score"] for r in local], abs=1e-5)
    assert all(Path(r["thumbnail"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for r in served)


# Append and link.

def test_append_imports_the_active_mesh_result_at_the_cursor(session):
    out = outcome(session, "search", "append")
    assert out["append"] == ["FINISHED"]
    assert len(out["appended"]) >= 1
    at = [sum(o["at"][i] for o in out["appended"]) / len(out["appended"]) for i in range(3)]
    assert at == pytest.approx(CURSOR, abs=1e-3)


def test_append_of_a_blend_copies_its_marked_asset_to_the_cursor(session):
    out = outcome(session, "blend_asset", "append_blend")
    assert out["append_blend"] == ["FINISHED"]
    assert [(o["name"].startswith("Stool"), o["at"], o["linked"]) for o in out["appended_blend"]] == [(True, CURSOR, False)]


def test_link_of_a_blend_places_a_collection_instance_at_the_cursor(session):
    out = outcome(session, "blend_asset", "link_blend")
    assert out["link_blend"] == ["FINISHED"]
    [instance] = out["linked_blend"]
    assert instance["at"] == CURSOR and instance["instance"] and instance["instanced_linked"] == [True]


# What ran: the extension's own core, through onnxruntime, with no torch loaded.

def test_the_panels_run_the_core_the_extension_carries(session):
    assert Path(session.out["core"]).is_relative_to(session.folder / "blender-user")


def test_the_panels_run_on_onnxruntime_without_torch(session):
    assert session.out["onnxruntime"] is True
    assert session.out["torch"] == []


MAKE_BLEND = r"""
import sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
for add, name, location in ((bpy.ops.mesh.primitive_cube_add, "Crate", (0, 0, 0)),
                            (bpy.ops.mesh.primitive_torus_add, "Ring", (3, 0, 0)),
                            (bpy.ops.mesh.primitive_uv_sphere_add, "Ball", (6, 0, 0)),
                            (bpy.ops.mesh.primitive_monkey_add, "Suzanne", (0, 3, 0))):
    add(location=location)
    bpy.context.active_object.name = name
    if name != "Suzanne" and sys.argv[2] == "assets":
        bpy.context.active_object.asset_mark()
bpy.ops.object.light_add(location=(0, 0, 5))
if sys.argv[2] == "assets":
    bpy.data.objects["Ring"].hide_set(True)
    # Asset files often keep assets in a collection no scene shows.
    shelf = bpy.data.collections.new("Shelf")
    shelf.use_fake_user = True
    shelf.objects.link(bpy.data.objects["Ball"])
    bpy.context.scene.collection.objects.unlink(bpy.data.objects["Ball"])
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
print("{}")
"""

READ_BLEND = r"""
import json, sys, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
layer = bpy.context.view_layer.objects
print(json.dumps({o.name: {"asset": o.asset_data is not None,
                           "tags": [t.name for t in o.asset_data.tags] if o.asset_data else None,
                           "description": o.asset_data.description if o.asset_data else None,
                           "custom": {k: (list(o[k]) if k == "ulip2_tags" else o[k]) for k in o.keys()
                                      if k.startswith("ulip2")},
                           "scenes": len(o.users_scene), "hidden": o.hide_get() if o.name in layer else None}
                  for o in bpy.data.objects}))
"""


def make_blend(tmp_path, name: str, kind: str) -> tuple[Path, dict]:
    """A .blend of a cube, torus, sphere, monkey and light; kind "assets" marks all but the
    monkey, hides the torus and keeps the sphere outside the scene. Returns it and its objects."""
    (tmp_path / "make.py").write_text(MAKE_BLEND)
    (tmp_path / "read.py").write_text(READ_BLEND)
    path = tmp_path / name
    run_bpy(tmp_path, str(tmp_path / "make.py"), str(path), kind)
    return path, run_bpy(tmp_path, str(tmp_path / "read.py"), str(path))


NO_SETTING = r"""
import json, sys, bpy
zip_path, blend = sys.argv[1:3]
assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                enable_on_install=True) == {"FINISHED"}
bpy.ops.wm.open_mainfile(filepath=blend)
bpy.ops.object.select_all(action="DESELECT")
crate = bpy.data.objects["Crate"]
crate.select_set(True)
result = sorted(bpy.ops.ulip2.auto_tag())
from bl_ext.user_default.ulip2.scene.inference import models_for
from bl_ext.user_default.ulip2.ui.preferences import bundle_folder, get
prefs = get(bpy.context)
print(json.dumps({"result": result, "tags": [t.name for t in crate.asset_data.tags],
                  "description": crate.asset_data.description, "preference": prefs.bundle,
                  "bundle": str(models_for(bundle_folder(prefs), prefs.device).bundle.path),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}))
"""


def test_the_zip_alone_auto_tags_a_marked_asset_with_no_setting_made(extension_zip, tmp_path, capsys):
    """A clean bpy, the built zip installed and nothing set: Auto-tag runs on the bundle the
    zip carries (the shipped default, float16 text tower) without torch, and gives a marked
    asset the very tags and caption `ulip2 blender tag` gives it with the default bundle here."""
    from cli.main import main
    from core.spaces.vocabularies import load_vocabulary

    source, _ = make_blend(tmp_path, "assets.blend", "assets")
    (tmp_path / "no_setting.py").write_text(NO_SETTING)
    out = run_bpy(tmp_path, str(tmp_path / "no_setting.py"), str(extension_zip), str(source))
    assert out["result"] == ["FINISHED"] and out["preference"] == ""
    assert Path(out["bundle"]).is_relative_to(tmp_path / "blender-user")
    assert len(out["tags"]) == 5 and set(out["tags"]) <= set(load_vocabulary("lvis")[1])
    assert out["description"] in set(load_bank()[1])
    assert out["torch"] == []

    assert main(["blender", "tag", str(source), "--out", str(tmp_path / "tagged.blend")]) == 0
    here = json.loads(capsys.readouterr().out)["labelled"]["Crate"]
    assert (here["tags"], here["caption"]) == (out["tags"], out["description"])


def test_blender_tag_writes_the_tagged_copy_and_never_the_input(text_bundle, vocabulary, tmp_path, capsys):
    """`ulip2 blender tag` in a bpy child process: every marked asset (hidden, or in no
    scene, too) gets k tags of the vocabulary and a caption in the saved copy, where they
    stay hidden and outside the scene; the input file is byte for byte as it was."""
    from cli.main import main

    source, before = make_blend(tmp_path, "assets.blend", "assets")
    original = source.read_bytes()
    saved = tmp_path / "out" / "tagged.blend"
    saved.parent.mkdir()
    assert main(["blender", "tag", str(source), "--out", str(saved), "--bundle", str(text_bundle.path),
                 "--vocabulary", str(vocabulary), "--k", str(K), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed["labelled"]) == ["Ball", "Crate", "Ring"] and printed["out"] == str(saved)

    after = run_bpy(tmp_path, str(tmp_path / "read.py"), str(saved))
    bank = set(load_bank()[1])
    for name in ("Ball", "Crate", "Ring"):
        tags = after[name]["tags"]
        assert tags == printed["labelled"][name]["tags"] and len(set(tags)) == K and set(tags) <= set(VOCABULARY)
        assert after[name]["description"] == printed["labelled"][name]["caption"] and after[name]["description"] in bank
    assert (after["Ring"]["hidden"], after["Ball"]["scenes"]) == (True, 0)  # the file's layout is kept
    assert after["Suzanne"] == before["Suzanne"]  # not an asset: untouched
    assert source.read_bytes() == original
    assert sorted(p.name for p in saved.parent.iterdir()) == ["tagged.blend"]  # no staging file left


def test_blender_tag_without_marked_assets_says_so_and_tags_all_objects_on_request(text_bundle, vocabulary,
                                                                                    tmp_path, capsys):
    from cli.main import main

    source, _ = make_blend(tmp_path, "plain.blend", "plain")
    saved = tmp_path / "tagged.blend"
    common = ["--bundle", str(text_bundle.path), "--device", "cpu", "--k", str(K), "--vocabulary", str(vocabulary)]
    assert main(["blender", "tag", str(source), "--out", str(saved), *common]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"error: {source}: no object is marked as an asset; tag every object with --all-objects, or "
                     "mark the assets in Blender first (Mark as Asset)")
    assert not saved.exists()

    assert main(["blender", "tag", str(source), "--out", str(saved), "--all-objects", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed["labelled"]) == ["Ball", "Crate", "Ring", "Suzanne"] and printed["skipped"] == ["Point"]
    after = run_bpy(tmp_path, str(tmp_path / "read.py"), str(saved))
    custom = after["Suzanne"]["custom"]
    assert custom["ulip2_tags"] == printed["labelled"]["Suzanne"]["tags"] and len(custom["ulip2_tags"]) == K
    assert custom["ulip2_caption"] in set(load_bank()[1])

    # Asked to write its input, or given something else than a .blend: one line, nothing run.
    for argv, said in ((["--out", str(source)], "--out must name another file: IN.blend is never written"),
                       (["--out", str(tmp_path / "x.glb")], "--out must name a .blend file")):
        assert main(["blender", "tag", str(source), *argv]) == 2
        assert said in capsys.readouterr().err
    assert main(["blender", "tag", str(tmp_path / "read.py"), "--out", str(saved)]) == 2
    assert "read.py: not a .blend file" in capsys.readouterr().err


def test_blender_tag_help_teaches_with_an_example(capsys):
    from cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["blender", "tag", "--help"])
    assert done.value.code == 0
    assert "ulip2 blender tag props.blend --out props-tagged.blend" in capsys.readouterr().out


CARRIED = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # the extension's site-packages, before this environment's
import numpy as np
import core, onnxruntime, tokenizers
from core.runtime import PointEncoder
from core.spaces import text_encoder
bundle = sys.argv[2]
text = text_encoder(bundle, device="cpu").embed_text(["a wooden chair"])
points = PointEncoder(bundle, device="cpu").embed_points(np.random.default_rng(0).normal(size=(256, 6)))
print(json.dumps({"files": [m.__file__ for m in (core, onnxruntime, tokenizers)], "text": list(text.shape),
                  "points": list(points.shape), "torch": "torch" in sys.modules}))
"""


def test_carried_runtime_wheels_run_the_bundle(text_bundle, tmp_path):
    """The zip for this platform, with onnxruntime and tokenizers from the registry (CI has it),
    installs in a clean bpy; then core, onnxruntime and tokenizers as Blender extracted them
    embed a text and a cloud with no torch. Random weights: shapes only."""
    from blender_addon.build import this_platform

    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--dest", str(tmp_path / "probe"), "flatbuffers"], capture_output=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("the package registry is not reachable from here")
    [zip_path] = build_extension(tmp_path / "dist", platforms=[this_platform()])
    (tmp_path / "install.py").write_text(
        "import sys, bpy\nassert bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo='user_default', "
        "enable_on_install=True) == {'FINISHED'}\nprint('{}')\n")
    run_bpy(tmp_path, str(tmp_path / "install.py"), str(zip_path))
    site = tmp_path / "blender-user" / "extensions" / ".local" / "lib" / "python3.11" / "site-packages"
    (tmp_path / "carried.py").write_text(CARRIED)
    out = run_bpy(tmp_path, str(tmp_path / "carried.py"), str(site), str(text_bundle.path))
    assert all(Path(f).is_relative_to(site) for f in out["files"]), out["files"]
    assert out["text"] == [1, 384] and out["points"] == [1, 384] and out["torch"] is False
