"""The `ulip2` command (cli/main.py), run in-process through main() (plus one real process for
--help). Bundles here have random weights: the commands' plumbing is what is tested."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    import trimesh

    folder = tmp_path_factory.mktemp("meshes")
    box = folder / "box.stl"
    trimesh.creation.box(extents=[1.0, 2.0, 0.5]).export(box)
    ball = folder / "ball.obj"
    trimesh.creation.icosphere(subdivisions=2).export(ball)
    cone = folder / "cone.ply"
    trimesh.creation.cone(radius=0.5, height=1.5).export(cone)
    return [box, ball, cone]


def test_help_from_the_installed_command():
    script = os.path.join(os.path.dirname(sys.executable), "ulip2")
    argv = [script, "--help"] if os.path.exists(script) else [sys.executable, "-m", "cli", "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("embed", "export", "info", "models", "index", "search", "demo", "train", "retrain"):
        assert f"\n    {command} " in result.stdout
    assert "ulip2 demo assets/ --out demo" in result.stdout  # the examples


def test_models_help_lists_its_actions(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["models", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for action in ("list", "pull", "import-ulip2"):
        assert action in out


def test_export_then_info(capsys, tmp_path):
    out_dir = tmp_path / "bundle"
    code, out, err = run(capsys, "export", "--out", out_dir, "--config", "pointbert-tiny", "--seed", "3")
    assert code == 0, err
    exported = json.loads(out)
    assert exported["path"] == str(out_dir.resolve())
    assert exported["trained"] is False and exported["encoder"]["name"] == "pointbert-tiny"
    assert (out_dir / "bundle.json").is_file() and (out_dir / "encoder.onnx").is_file()

    code, out, err = run(capsys, "info", out_dir)
    assert code == 0
    assert "pointbert-tiny: 2 blocks x 64, 32 groups of 16" in out
    assert "minilm (384-d)" in out
    assert "512 points x 6 channels" in out
    assert "NO (random weights" in out

    code, out, _ = run(capsys, "info", out_dir / "bundle.json", "--json")
    assert code == 0
    info = json.loads(out)
    assert info == json.loads((out_dir / "bundle.json").read_text()) | {"path": str(out_dir.resolve())}

    # a second export into the same folder is refused, cleanly
    code, out, err = run(capsys, "export", "--out", out_dir, "--config", "pointbert-tiny")
    assert code == 2
    assert "error:" in err and "--overwrite" in err


def test_info_on_a_non_bundle(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 2
    assert "not a model bundle" in err


def test_embed_to_stdout(capsys, tiny_bundle, meshes):
    from core.runtime import PointEncoder

    code, out, err = run(capsys, "embed", "--bundle", tiny_bundle.path, *meshes[:2])
    assert code == 0, err
    result = json.loads(out)
    assert result["space"] == "minilm" and result["dim"] == 384 and result["failed"] == []
    assert result["bundle"] == str(tiny_bundle.path.resolve())
    assert [e["path"] for e in result["embeddings"]] == [str(m) for m in meshes[:2]]
    vectors = np.array([e["embedding"] for e in result["embeddings"]])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = dict(PointEncoder(tiny_bundle.bundle, device="cpu").embed_files(meshes[:2], seed=0))
    for e in result["embeddings"]:
        np.testing.assert_allclose(e["embedding"], expected[e["path"]], atol=1e-6)
    assert "untrained" in err  # the random-weights bundle is called out


def test_embed_seed_changes_the_sample(capsys, tiny_bundle, meshes):
    vectors = []
    for seed in (0, 0, 1):
        code, out, _ = run(capsys, "embed", "--bundle", tiny_bundle.path, meshes[1], "--seed", seed)
        assert code == 0
        vectors.append(np.array(json.loads(out)["embeddings"][0]["embedding"]))
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert np.abs(vectors[0] - vectors[2]).max() > 0


def test_embed_to_npy(capsys, tiny_bundle, meshes, tmp_path):
    target = tmp_path / "out.npy"
    code, out, err = run(capsys, "embed", "--bundle", tiny_bundle.path, *meshes, "--out", target)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows"] == [str(m) for m in meshes]
    assert summary["out"] == str(target)
    matrix = np.load(target)
    assert matrix.shape == (3, 384) and matrix.dtype == np.float32
    # row i is file i
    code, out, _ = run(capsys, "embed", "--bundle", tiny_bundle.path, meshes[2])
    np.testing.assert_allclose(matrix[2], json.loads(out)["embeddings"][0]["embedding"], atol=1e-6)


def test_embed_to_json_file(capsys, tiny_bundle, meshes, tmp_path):
    target = tmp_path / "out.json"
    code, out, _ = run(capsys, "embed", "--bundle", tiny_bundle.path, meshes[0], "--out", target)
    assert code == 0
    assert json.loads(out)["rows"] == [str(meshes[0])]
    written = json.loads(target.read_text())
    assert [e["path"] for e in written["embeddings"]] == [str(meshes[0])]
    assert len(written["embeddings"][0]["embedding"]) == 384


def test_embed_reports_bad_files_and_keeps_the_good(capsys, tiny_bundle, meshes, tmp_path):
    broken = tmp_path / "broken.obj"
    broken.write_text("this is not a mesh\n")
    missing = tmp_path / "missing.glb"
    target = tmp_path / "out.npy"
    code, out, err = run(capsys, "embed", "--bundle", tiny_bundle.path, meshes[0], broken, missing, meshes[1],
                         "--out", target)
    assert code == 1
    summary = json.loads(out)
    assert summary["rows"] == [str(meshes[0]), str(meshes[1])]
    assert [f["path"] for f in summary["failed"]] == [str(broken), str(missing)]
    assert all(f["error"] for f in summary["failed"])
    assert f"error: {broken}" in err and f"error: {missing}" in err
    assert np.load(target).shape == (2, 384)


def test_embed_without_any_bundle_is_a_clear_error(capsys, monkeypatch, meshes):
    import core.bundle

    monkeypatch.setattr(core.bundle, "SHIPPED_BUNDLE", core.bundle.SHIPPED_BUNDLE.parent / "no-such-bundle")
    monkeypatch.delenv("ULIP2_BUNDLE", raising=False)
    code, out, err = run(capsys, "embed", meshes[0])
    assert code == 2
    assert out == ""
    assert err.startswith("error:") and "--bundle" in err and "ULIP2_BUNDLE" in err


def test_embed_honours_ulip2_bundle(capsys, monkeypatch, tiny_bundle, meshes):
    monkeypatch.setenv("ULIP2_BUNDLE", str(tiny_bundle.path))
    code, out, err = run(capsys, "embed", meshes[0])
    assert code == 0, err
    assert json.loads(out)["bundle"] == str(tiny_bundle.path.resolve())


def test_embed_with_a_missing_bundle_folder(capsys, tmp_path, meshes):
    code, _, err = run(capsys, "embed", "--bundle", tmp_path / "nope", meshes[0])
    assert code == 2 and "not a model bundle" in err


def test_embed_on_cuda_without_gpu_runtime(capsys, tiny_bundle, meshes):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime here has CUDA")
    code, _, err = run(capsys, "embed", "--bundle", tiny_bundle.path, "--device", "cuda", meshes[0])
    assert code == 2 and "ulip2[gpu]" in err


def test_models_list(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    for name in ("ulip2-pointbert", "pointbert-small", "pointbert-tiny", "ulip2-pointbert-10k"):
        assert name in out


def test_import_ulip2_with_a_checkpoint_of_the_wrong_size(capsys, tmp_path):
    """A ULIP-2-layout checkpoint of the tiny config does not fit ulip2-pointbert: exit 2,
    the mismatch named, no traceback, no bundle left behind."""
    import torch

    from core.models import create_encoder

    tiny = create_encoder("pointbert-tiny", seed=0)
    state = {f"module.point_encoder.{k}": v for k, v in tiny.state_dict().items() if k != "projection.weight"}
    state["module.pc_projection"] = tiny.projection.weight.T.contiguous()
    state["module.logit_scale"] = torch.tensor(4.6)
    ckpt = tmp_path / "tiny-ulip2.pt"
    torch.save({"epoch": 1, "state_dict": state}, ckpt)
    out_dir = tmp_path / "bundle"
    code, out, err = run(capsys, "models", "import-ulip2", ckpt, "--out", out_dir)
    assert code == 2
    assert out == ""
    assert "does not fit encoder config 'ulip2-pointbert'" in err
    assert "shape" in err
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_models_pull_offline_fails_cleanly(capsys, tmp_path, offline_hub):
    code, out, err = run(capsys, "models", "pull", "ulip2-pointbert-10k", "--out", tmp_path / "b", "--no-space")
    assert code == 2
    assert "network" in err and "import-ulip2" in err
    assert not (tmp_path / "b").exists()


def test_unknown_release(capsys, tmp_path):
    code, _, err = run(capsys, "models", "pull", "no-such-release", "--out", tmp_path / "b")
    assert code == 2 and "ulip2-pointbert-10k" in err



def test_a_write_that_fails_is_one_line_naming_the_file(tmp_path, capsys):
    """Tried as a new user would: `report --out` where it cannot write ended in an OSError
    traceback; now one line names the file, exit 1. (A path through a file fails for root
    too, where a read-only folder would not.)"""
    from core.library.store import Library

    with Library(tmp_path / "lib.sqlite", create=True):
        pass
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "report.html"
    assert main(["report", "--db", str(tmp_path / "lib.sqlite"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: {out.parent}: File exists" in err and "Traceback" not in err


def _one_asset_library(tmp_path):
    import shutil

    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "chair.glb", assets / "chair.glb")
    db = tmp_path / "lib.sqlite"
    assert main(["index", str(assets), "--db", str(db), "--quiet", "--workers", "0"]) == 0
    return assets, db


def test_a_damaged_library_is_one_line_with_the_way_out(tmp_path, capsys):
    """Tried as a careful tester would: 8 KB of garbage in the middle of the library made
    `search` end in a sqlite3.DatabaseError traceback."""
    _, db = _one_asset_library(tmp_path)
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8192] = os.urandom(min(8192, len(data) - middle))
    db.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["search", "a chair", "--db", str(db)]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(db) in err and "Traceback" not in err
    assert "damaged" in err or "corrupt" in err


def test_a_full_disk_says_so_and_keeps_what_was_committed(tmp_path, capsys, monkeypatch):
    """The disk filling up at a commit (made here by a write that raises SQLite's own
    'database or disk is full', as a full disk does) is one line that says so, exit 1; the
    assets committed before it stay."""
    from core.library.store import Library

    assets, db = _one_asset_library(tmp_path)
    (assets / "chair2.glb").write_bytes((assets / "chair.glb").read_bytes() + b"\0" * 8)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Library, "write_batch", full)
    capsys.readouterr()
    assert main(["index", str(assets), "--db", str(db), "--quiet", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"error: {db}: the disk is full" in err and "committed work is kept" in err
    monkeypatch.undo()
    with Library(db) as library:
        assert [Path(row["path"]).name for row in library.assets().values()] == ["chair.glb"]


def test_every_command_and_option_says_what_it_does():
    """--help teaches: no subcommand, argument or option of `ulip2` without a help text."""
    import argparse

    from cli.main import build_parser

    missing = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest for choice in action._choices_actions if choice.help}
                for sub_name, sub in action.choices.items():
                    if sub_name not in described:
                        missing.append(f"{name} {sub_name}")
                    walk(sub, f"{name} {sub_name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "ulip2")
    assert missing == []
