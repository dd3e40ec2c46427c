"""Headless batch: good files done, a corrupt file and one that crashes Blender recorded
with reasons, a rerun skips what is done; each object marked as an asset in a .blend is its
own record. Workers are real bpy processes."""

import ctypes.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("bpy")

from cli.main import main  # noqa: E402
from core.triplets import TripletStore, key_for_asset, key_for_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST = ["--views", "2", "--resolution", "32", "--samples", "2"]

# A real crashing input: Blender's PLY importer parses the vertex count with std::stoi, and a
# count beyond INT_MAX throws std::out_of_range out of C++ code, which aborts the process.
CRASHING_PLY = ("ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\nproperty float x\n"
                "property float y\nproperty float z\nend_header\n")


@pytest.fixture
def assets(tmp_path):
    folder = tmp_path / "assets"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "chair.glb", folder / "chair.glb")
    (folder / "sub" / "wedge.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    (folder / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    (folder / "crash.ply").write_text(CRASHING_PLY)
    (folder / "notes.txt").write_text("not an asset")
    lopsided().export(folder / "sub" / "crate.off")  # Blender has no OFF importer
    return folder


def lopsided():
    """Long in y, lopsided on every axis: a swapped axis shows in the spreads, a flipped one
    in the third moments (points are centred, so their means are all 0)."""
    import trimesh

    return trimesh.util.concatenate([trimesh.creation.box((1.0, 2.0, 0.5)), trimesh.creation.box(
        (0.8, 0.8, 0.8), trimesh.transformations.translation_matrix((1.2, 1.8, 0.9)))])


def run(capsys, *argv):
    code = main(["triplets", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_batch_records_failures_and_resumes(assets, tmp_path, capsys):
    store = tmp_path / "store"
    code, summary = run(capsys, "build", str(assets), "--store", str(store), "--captioner", "metadata", "--k", "3",
                        "--workers", "2", *FAST)
    assert code == 1 and summary["files"] == 5 and summary["written"] == 3
    assert summary["skipped"] == []
    reasons = {Path(f["source"]).name: f["reason"] for f in summary["failed"]}
    assert sorted(reasons) == ["broken.glb", "crash.ply"]
    assert "corrupt or truncated" in reasons["broken.glb"]
    assert "crashed" in reasons["crash.ply"] and "SIGABRT" in reasons["crash.ply"]

    records = {r.meta["source"]["object"]: r for r in TripletStore(store).records()}
    assert sorted(records) == ["chair", "crate", "wedge"]
    assert all(len(r.view_paths()) == 2 and len(r.captions) == 2 for r in records.values())
    assert "chair" in records["chair"].captions[0]
    # The .off rendered from the glTF of what trimesh reads, its points in trimesh's frame.
    from core.meshio import load_points

    crate = records["crate"].points()[:, :3].astype(np.float32)
    reference = load_points(assets / "sub" / "crate.off", 10_000)[:, :3]
    np.testing.assert_allclose(crate.std(axis=0), reference.std(axis=0), atol=0.01)
    np.testing.assert_allclose((crate ** 3).mean(axis=0), (reference ** 3).mean(axis=0), atol=0.002)
    assert Image.open(records["crate"].view_paths()[0]).getextrema()[3][1] == 255, "the view shows it"

    code, info = run(capsys, "info", str(store), "--json")
    assert (info["records"], info["views"], info["captioned"], info["failed"]) == (3, 6, 3, 2)

    # Rerun: done files are skipped by content hash; the failed ones are tried again. A file
    # named on the command line in a format Blender does not read is skipped as well (it was
    # sent to Blender and failed as "KeyError: '.txt'").
    code, summary = run(capsys, "build", str(assets), str(assets / "notes.txt"), "--store", str(store),
                        "--no-caption", *FAST)
    assert summary["skipped_done"] == 3 and summary["written"] == 0 and len(summary["failed"]) == 2
    assert [entry["path"] for entry in summary["skipped"]] == [str(assets / "notes.txt")]
    assert summary["skipped"][0]["reason"].startswith("not an asset file: ulip2 reads .glb, .gltf")


@pytest.mark.parametrize("hub", ["marked offline", "unreachable"])
def test_missing_captioner_weights_stop_in_seconds_before_any_work(assets, tmp_path, unreachable_hub, hub):
    """Tried as a new user would, offline: the build spent 2 min 27 s in HTTP retries before
    its message. Now the empty cache, and the offline mark or a hub that cannot be reached,
    decide it at once, in one line that says how to fetch the weights or do without."""
    import subprocess
    import sys
    import time

    env = {**unreachable_hub, "HF_HUB_OFFLINE": "1"} if hub == "marked offline" else unreachable_hub
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cli", "triplets", "build", str(assets / "chair.glb"),
                           "--store", str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert done.returncode == 2 and elapsed < 15, (done.returncode, elapsed)
    (line,) = done.stderr.splitlines()
    assert f"not in the Hugging Face cache ({tmp_path / 'hf' / 'hub'})" in line
    said = "marked offline (HF_HUB_OFFLINE)" if hub == "marked offline" else f"{env['HF_ENDPOINT']} cannot give"
    assert said in line
    assert "'hf download Salesforce/blip2-opt-6.7b'" in line and "'--captioner metadata'" in line
    assert not (tmp_path / "store").exists()


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None,
                    reason="Workbench needs Mesa's EGL (libegl1 libegl-mesa0 libgl1-mesa-dri)")
def test_workbench_engine(assets, tmp_path, capsys):
    code, summary = run(capsys, "build", str(assets / "chair.glb"), "--store", str(tmp_path / "store"),
                        "--render-engine", "BLENDER_WORKBENCH", "--no-caption", *FAST)
    assert code == 0 and summary["written"] == 1
    (record,) = TripletStore(tmp_path / "store").records()
    assert record.meta["views"]["engine"] == "BLENDER_WORKBENCH"
    alpha = np.asarray(Image.open(record.view_paths()[0]))[..., 3]
    assert 0.05 < (alpha > 127).mean() < 0.9


def test_each_marked_asset_of_a_blend_is_its_own_record(tmp_path, capsys):
    from blender_files import MARKED, write_blend_files

    blend, fbx = write_blend_files(tmp_path / "assets")
    store = tmp_path / "store"
    code, summary = run(capsys, "build", str(tmp_path / "assets"), "--store", str(store), "--no-caption", *FAST)
    assert code == 0 and (summary["files"], summary["written"]) == (2, 3)
    records = {r.meta["source"]["object"]: r for r in TripletStore(store).records()}
    assert sorted(records) == [*MARKED, "cone"], "two marked assets + the .fbx; the unmarked Cone is no record"
    for name in MARKED:
        record = records[name]
        assert record.key == key_for_asset(key_for_file(blend), name)
        assert record.meta["source"] == {"path": str(blend), "object": name, "kind": "asset"}
        assert record.meta["facts"]["object_names"] == [name], "only the asset's own geometry is sampled"
        assert np.abs(record.points()[:, :3]).max() <= 1.001
    assert records["cone"].meta["source"]["kind"] == "file"
    code, summary = run(capsys, "build", str(tmp_path / "assets"), "--store", str(store), "--no-caption", *FAST)
    assert (summary["skipped_done"], summary["written"]) == (3, 0), "a rerun skips every stored asset"


def test_a_blend_without_marked_assets_is_one_record(tmp_path, capsys):
    from blender_files import write_blend_files

    write_blend_files(tmp_path / "assets", mark=False, fbx=False)
    code, summary = run(capsys, "build", str(tmp_path / "assets"), "--store", str(tmp_path / "store"),
                        "--no-caption", *FAST)
    assert code == 0 and summary["written"] == 1
    (record,) = TripletStore(tmp_path / "store").records()
    assert record.meta["source"]["kind"] == "file"
    assert sorted(record.meta["facts"]["object_names"]) == ["Ball", "Cone", "Crate"]


def test_ray_engine_runs_the_same_units(local_ray, tmp_path, capsys):
    """--engine ray: each asset (both marked assets of the .blend, the .glb) is a Ray task
    running the crash-isolated worker; the crashing file is recorded; the driver writes."""
    from blender_files import MARKED, write_blend_files

    write_blend_files(tmp_path / "assets", fbx=False)
    shutil.copy(EXAMPLES / "chair.glb", tmp_path / "assets" / "chair.glb")
    (tmp_path / "assets" / "crash.ply").write_text(CRASHING_PLY)
    store = tmp_path / "store"
    code, summary = run(capsys, "build", str(tmp_path / "assets"), "--store", str(store), "--engine", "ray",
                        "--no-caption", *FAST)
    assert code == 1 and summary["written"] == 3
    assert [(Path(f["source"]).name, "crashed" in f["reason"]) for f in summary["failed"]] == [("crash.ply", True)]
    records = {r.meta["source"]["object"]: r for r in TripletStore(store).records()}
    assert sorted(records) == [*MARKED, "chair"]
    assert all(len(r.view_paths()) == 2 and r.points().shape == (10_000, 6) for r in records.values())
    assert not any((store / "tmp").iterdir()), "every record folder was committed or removed"
    assert local_ray.is_initialized(), "a Ray the caller started is left running"


def test_a_missing_texture_file_falls_back_to_the_material_colour(tmp_path, capsys):
    """An OBJ whose material names an image that is not there (as catalogues ship them):
    Blender gives that image no pixels; the object is still sampled and rendered."""
    folder = tmp_path / "assets"
    folder.mkdir()
    (folder / "tile.mtl").write_text("newmtl red\nKd 0.8 0.1 0.1\nmap_Kd missing.png\n")
    (folder / "tile.obj").write_text("mtllib tile.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"
                                     "vt 0 0\nvt 1 0\nvt 0 1\nusemtl red\n"
                                     "f 1/1 2/2 3/3\nf 1/1 2/2 4/3\nf 1/1 3/2 4/3\nf 2/1 3/2 4/3\n")
    code, summary = run(capsys, "build", str(folder), "--store", str(tmp_path / "store"), "--no-caption", *FAST)
    assert (code, summary["written"], summary["failed"]) == (0, 1, [])
    (record,) = TripletStore(tmp_path / "store").records()
    colours = record.points()[:, 3:6].astype(np.float32)
    assert colours.std(axis=0).max() < 0.05 and colours[:, 0].mean() > 2 * colours[:, 1].mean()  # flat red


def test_blender_points_carry_the_colours_trimesh_reads_from_the_file(tmp_path, capsys):
    """The same OBJ through Blender's worker and through trimesh (what `ulip2 eval` and
    `ulip2 index` read OBJ files with): a material colour (MTL Kd, kept as stored, not turned
    to sRGB), a texture, and a material no library defines (ULIP-2's grey, not Blender's
    0.8 default) give the same colours."""
    from core.meshio import load_points

    folder = tmp_path / "assets"
    folder.mkdir()
    faces = "f 1/1 2/2 3/3\nf 1/1 2/2 4/3\nf 1/1 3/2 4/3\nf 2/1 3/2 4/3\n"
    body = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl m\n" + faces
    (folder / "kd.mtl").write_text("newmtl m\nKd 0.5 0.25 0.1\n")
    (folder / "kd.obj").write_text("mtllib kd.mtl\n" + body)
    (folder / "tex.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    (folder / "tex.obj").write_text("mtllib tex.mtl\n" + body)
    Image.fromarray(np.full((8, 8, 3), (200, 100, 50), np.uint8)).save(folder / "tex.png")
    (folder / "nomtl.obj").write_text(body.replace("usemtl m", "usemtl amber"))
    code, summary = run(capsys, "build", str(folder), "--store", str(tmp_path / "store"), "--no-caption", *FAST)
    assert (code, summary["written"], summary["failed"]) == (0, 3, [])
    store = TripletStore(tmp_path / "store")
    for name, expected in (("kd.obj", (0.5, 0.25, 0.1)), ("tex.obj", (200 / 255, 100 / 255, 50 / 255)),
                           ("nomtl.obj", (0.4, 0.4, 0.4))):
        blender = store.record(key_for_file(folder / name)).points()[:, 3:6].astype(np.float32).mean(axis=0)
        trimesh_points = load_points(folder / name, 2000, seed=0)[:, 3:6].mean(axis=0)
        np.testing.assert_allclose(blender, expected, atol=0.01)
        np.testing.assert_allclose(blender, trimesh_points, atol=0.01)


_HOSTILE_BLENDS = """
import sys
import bpy

outside, assets, marker = sys.argv[1:4]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add()
bpy.context.object.name = "Secret"
bpy.ops.wm.save_as_mainfile(filepath=outside + "/library.blend")

bpy.ops.wm.read_factory_settings(use_empty=True)
with bpy.data.libraries.load(outside + "/library.blend", link=True) as (source, target):
    target.objects = ["Secret"]
for obj in target.objects:
    bpy.context.scene.collection.objects.link(obj)
bpy.ops.wm.save_as_mainfile(filepath=assets + "/linked.blend", relative_remap=True)

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add()
material = bpy.data.materials.new("wood")
material.use_nodes = True
node = material.node_tree.nodes.new("ShaderNodeTexImage")
node.image = bpy.data.images.load(outside + "/wood.png")
bpy.context.object.data.materials.append(material)
bpy.ops.wm.save_as_mainfile(filepath=assets + "/textured.blend", relative_remap=True)

# Code in a file: a text block registered to run at load, and a Python driver.
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add()
text = bpy.data.texts.new("boot.py")
text.write(f"open({marker + '.text'!r}, 'w').write('text block ran')")
text.use_module = True
driver = bpy.context.object.driver_add("location", 0).driver
driver.type = "SCRIPTED"
driver.expression = f"len(open({marker + '.driver'!r}, 'w').write('driver ran')) * 0"
bpy.ops.wm.save_as_mainfile(filepath=assets + "/scripted.blend")
"""

_OPEN_TRUSTED = """
import sys
import bpy

bpy.context.preferences.filepaths.use_scripts_auto_execute = True
bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False, use_scripts=True)
bpy.context.evaluated_depsgraph_get().update()
"""


def _gltf_with_outside_buffer(assets: Path, outside: Path) -> None:
    import trimesh

    files = trimesh.exchange.gltf.export_gltf(trimesh.creation.box())
    document = json.loads(files.pop("model.gltf"))
    for name, data in files.items():  # the buffers move out; the file names them there
        (outside / name).write_bytes(data)
    for buffer in document["buffers"]:
        buffer["uri"] = "../outside/" + buffer["uri"]
    (assets / "steal.gltf").write_text(json.dumps(document))


def test_files_naming_others_outside_their_folder_are_refused_and_no_code_runs(tmp_path, capsys):
    """glTF buffers, OBJ material libraries, a .blend's linked library and its image each
    point outside the asset's folder: each file is refused by name, nothing of theirs is
    recorded, the good file beside them is. A .blend's text block and Python driver, which
    a trusting Blender runs (checked first), do not run when the worker opens it."""
    import subprocess
    import sys

    outside, assets = tmp_path / "outside", tmp_path / "assets"
    outside.mkdir()
    assets.mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(outside / "wood.png")
    (outside / "secret.mtl").write_text("newmtl m\nKd 1 0 0\n")
    (assets / "steal.obj").write_text("mtllib ../outside/secret.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"
                                      "usemtl m\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    (assets / "wedge.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    _gltf_with_outside_buffer(assets, outside)
    marker = tmp_path / "ran"
    subprocess.run([sys.executable, "-c", _HOSTILE_BLENDS, str(outside), str(assets), str(marker)],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-c", _OPEN_TRUSTED, str(assets / "scripted.blend")],
                   check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in tmp_path.glob("ran.*")) == ["ran.driver", "ran.text"], "the payload works"
    for ran in tmp_path.glob("ran.*"):
        ran.unlink()

    code, summary = run(capsys, "build", str(assets), "--store", str(tmp_path / "store"), "--no-caption", *FAST)
    reasons = {Path(f["source"]).name: f["reason"] for f in summary["failed"]}
    assert sorted(reasons) == ["linked.blend", "steal.gltf", "steal.obj", "textured.blend"]
    assert all("outside the asset's folder" in reason for reason in reasons.values())
    assert "../outside/gltf_buffer_0.bin" in reasons["steal.gltf"] and "../outside/secret.mtl" in reasons["steal.obj"]
    assert "library.blend" in reasons["linked.blend"] and "wood.png" in reasons["textured.blend"]
    assert code == 1 and summary["written"] == 2
    names = sorted(r.meta["source"]["object"] for r in TripletStore(tmp_path / "store").records())
    assert names == ["scripted", "wedge"]
    assert not list(tmp_path.glob("ran.*")), "a text block or driver of scripted.blend ran"


def _on_a_small_disk(disk: Path, script: str) -> None:
    """Run the sh `script` with `disk` a 8 MB tmpfs (a real file system that fills up),
    mounted in a private mount namespace: no root needed where user namespaces are allowed."""
    import shutil
    import subprocess

    disk.mkdir()
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(disk)], capture_output=True,
                           text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr if probe else 'no unshare'}")
    subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=8m tmpfs {disk}\n{script}"],
                   check=True, timeout=600)


def test_a_full_disk_stops_the_batch_and_keeps_what_was_committed(assets, tmp_path):
    """A store on a disk that fills up, once while a worker writes views and points, once while
    this process writes a record's captions: one line says the disk is full (it was blamed on
    the file as 'OSError: ...', or came out as 'check the path'), exit 1, no file is recorded as
    failed, and the record committed before is whole."""
    import shlex
    import sys

    disk, out = tmp_path / "disk", tmp_path / "out"
    out.mkdir()
    store = disk / "store"
    build = " ".join(map(shlex.quote, [sys.executable, "-m", "cli", "triplets", "build", "--store", str(store),
                                       *FAST, str(assets / "chair.glb")]))
    _on_a_small_disk(disk, f"""
        {build} --no-caption > /dev/null 2>&1
        dd if=/dev/zero of={disk}/filler bs=64k 2> /dev/null
        {build} {assets / "sub" / "wedge.obj"} --no-caption 2> {out}/render.err; echo $? > {out}/render.rc
        {build} --captioner metadata --k 2 2> {out}/caption.err; echo $? > {out}/caption.rc
        cp -r {store} {out}/store""")

    for step in ("render", "caption"):
        assert (out / f"{step}.rc").read_text().split() == ["1"], step
        lines = [line for line in (out / f"{step}.err").read_text().splitlines() if line.strip()]
        assert lines[-1] == (f"error: {store}: the disk is full (No space left on device); free some space and run "
                             "the same build again: committed records are kept (1 in the store) and not redone")
        assert not any("Traceback" in line or "crashed" in line for line in lines), lines
    kept = TripletStore(out / "store")
    info = kept.info()
    assert (info["records"], info["failed"], info["captioned"]) == (1, 0, 0)
    (record,) = kept.records()
    assert record.meta["source"]["object"] == "chair" and record.points().shape == (10_000, 6)
    assert [Image.open(path).size for path in record.view_paths()] == [(32, 32), (32, 32)]
