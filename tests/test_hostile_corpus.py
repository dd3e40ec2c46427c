"""One hostile corpus, made here, through every command that reads assets: `ulip2 index`,
`embed`, `eval`, `triplets build` and the bundle loader. Each bad case is named with a reason
in the command's output, no command prints a traceback or runs past its time bound, the good
files beside them are done, and nothing outside the corpus is read. Real processes; the
bundle is the session's small random-weight one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TIME_BOUND_S = 240
WEDGE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
# name -> a word its reason must hold, for every reader
BAD = {"empty.glb": "empty", "truncated.glb": "glb", "junk.ply": "ply", "all_nan.obj": "",
       "gltf1.gltf": "glTF", "pipe.obj": "regular file", "zero.stl": "regular file"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "outside").mkdir()
    (root / "outside" / "secret.mtl").write_text("newmtl m\nKd 1 0 0\n")
    folder = root / "corpus" / "crate"
    folder.mkdir(parents=True)
    chair = (REPO / "examples" / "chair.glb").read_bytes()
    (folder / "good.glb").write_bytes(chair)
    (folder / "wedge.obj").write_text(WEDGE)
    (folder / "empty.glb").write_bytes(b"")
    (folder / "truncated.glb").write_bytes(chair[: len(chair) // 2])
    (folder / "junk.ply").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "all_nan.obj").write_text("v nan nan nan\nv nan 0 0\nv 0 nan 0\nf 1 2 3\n")
    (folder / "gltf1.gltf").write_text(json.dumps({"asset": {"version": "1.0"}, "meshes": {}}))
    (folder / "steal.obj").write_text("mtllib ../../outside/secret.mtl\nusemtl m\n" + WEDGE)
    os.mkfifo(folder / "pipe.obj")
    (folder / "zero.stl").symlink_to("/dev/zero")
    (folder / os.fsdecode(b"caf\xe9_box.obj")).write_text("v 2 2 2\n" + WEDGE)  # a latin-1 name, of an old archive
    shutil.copytree(folder, root / "corpus" / "lamp", symlinks=True, ignore=lambda _, names: ["pipe.obj"])
    return root / "corpus"


def ulip2(*argv) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cli", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=TIME_BOUND_S)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def assert_named(output: str, names):
    for name in names:
        lines = [line for line in output.splitlines() if name in line]
        assert lines, f"{name} is not named"
        assert any(BAD.get(name, "").lower() in line.lower() for line in lines), (name, lines)


def test_index(corpus, tmp_path, tiny_bundle):
    done = ulip2("index", corpus, "--db", tmp_path / "lib.sqlite", "--bundle", tiny_bundle.path, "--json", "--quiet")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["added"] == 6, "good.glb, wedge.obj and steal.obj (its outside library not read) twice"
    assert_named(done.stderr + json.dumps(report), BAD)
    assert "not valid UTF-8" in done.stderr


def test_embed(corpus, tmp_path, tiny_bundle):
    files = sorted(p for p in (corpus / "crate").iterdir())
    done = ulip2("embed", *files, "--bundle", tiny_bundle.path, "--out", tmp_path / "x.npy")
    assert done.returncode == 1
    assert np.load(tmp_path / "x.npy").shape == (3, 384)
    assert_named(done.stderr, BAD)
    assert "not valid UTF-8" in done.stderr


def test_eval(corpus, tiny_bundle):
    done = ulip2("eval", corpus, "--bundle", tiny_bundle.path, "--json")
    result = json.loads(done.stdout)
    assert result["n"] == 6 and result["classes"] == 2
    left_out = "\n".join(json.dumps(entry) for entry in result["failed"] + result["skipped"])
    assert_named(left_out, BAD)
    assert "not valid UTF-8" in left_out


def test_triplets_build_refuses_what_leaves_the_folder(corpus, tmp_path):
    pytest.importorskip("bpy")
    done = ulip2("triplets", "build", corpus / "crate", "--store", tmp_path / "store", "--no-caption",
                 "--views", "2", "--resolution", "32", "--samples", "2")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["written"] == 3, "good.glb, wedge.obj and the latin-1 name (a store keys records by content)"
    reasons = {Path(f["source"]).name: f["reason"] for f in summary["failed"]}
    assert "outside the asset's folder" in reasons.pop("steal.obj")
    assert_named(json.dumps(summary["skipped"]) + "\n" + "\n".join(f"{k}: {v}" for k, v in reasons.items()), BAD)


def test_a_lying_bundle_is_one_line(corpus, tmp_path, tiny_bundle):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, bundle)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"]["fp32"] = "../../../../etc/passwd"
    (bundle / "bundle.json").write_text(json.dumps(meta))
    done = ulip2("embed", corpus / "crate" / "good.glb", "--bundle", bundle)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "etc/passwd" in done.stderr and "bundle" in done.stderr
