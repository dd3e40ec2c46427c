"""`ulip2 retrain` end to end on a tiny labelled folder: real Blender worker renders (2 views
at 32 px), metadata captions, minilm features, fine-tuning of a tiny random-weight bundle
(mechanics, not accuracy), before/after held-out numbers, a new trained bundle; a rerun
resumes instead of redoing."""

from __future__ import annotations

import json
import warnings

import trimesh

from cli.main import main
from training.retrain import split_files

SHAPES = {"crate": trimesh.creation.box, "ball": trimesh.creation.icosphere,
          "pipe": lambda: trimesh.creation.cylinder(radius=0.2, height=2.0)}


def _library(root):
    for label, make in SHAPES.items():
        (root / label).mkdir(parents=True)
        for i in range(4):
            mesh = make()
            mesh.apply_scale(1 + 0.2 * i)
            mesh.export(root / label / f"{label}-{i}.glb")
    return root


def test_split_is_stable_and_labels_come_from_folders(tmp_path):
    root = _library(tmp_path / "lib").resolve()
    files = sorted(root.rglob("*.glb"))
    train, held = split_files(files, [root], 0.5)
    assert split_files(files, [root], 0.5) == (train, held)
    assert len(train) + len(held) == len(files) and held
    assert all(path.parent.name == label for path, label in held)


def test_retrain_runs_every_stage_and_resumes(tmp_path, tiny_bundle, capsys):
    """Besides the 12 meshes: an .fbx whose name hashes into the held-out share (it was held out
    and never evaluated: '5 held out', 4 evaluated), an .off (Blender has no importer for it:
    it renders from the glTF of the mesh trimesh reads, and trains) and a damaged held-out
    .glb. Every file is accounted for."""
    import shutil

    from blender_files import write_blend_files

    root = _library(tmp_path / "lib")
    _, fbx = write_blend_files(tmp_path / "blender", mark=False)
    shutil.copy(fbx, root / "pipe" / "pipe-x.fbx")  # hash bucket 0.03: held out, were it a mesh eval reads
    trimesh.creation.box().export(root / "crate" / "crate-9.off")
    (root / "crate" / "crate-bad.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")  # bucket 0.44: held out
    out, work = tmp_path / "studio", tmp_path / "work"
    args = ["retrain", str(root), "--from", str(tiny_bundle.path), "--out", str(out), "--work", str(work),
            "--epochs", "1", "--batch-size", "4", "--holdout", "0.5", "--views", "2", "--resolution", "32"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "before  top-1" in captured.err and "after   top-1" in captured.err
    assert result["skipped"] == []
    assert [f["path"] for f in result["held_out_failed"]] == [str((root / "crate" / "crate-bad.glb").resolve())]
    assert result["held_out"] == result["before"]["n"] + 1 >= 3
    assert result["trained_on"] + result["held_out"] == 15, "pipe-x.fbx and crate-9.off train"
    assert f"held-out zero-shot on {result['before']['n']} of {result['held_out']} held-out assets" in captured.err
    for when in ("before", "after"):
        assert 0 <= result[when]["top1"] <= result[when]["top5"] <= 1
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["trained"] is True and meta["encoder"]["name"] == "pointbert-tiny"
    assert (work / "run" / "last.pt").is_file()
    events = (work / "store" / "manifest.jsonl").read_text()
    assert events.count('"done"') == 10 and events.count('"captioned"') == 10
    assert str(root / "crate" / "crate-9.off") in events

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0  # everything done: nothing rendered, captioned or trained again
    assert (work / "store" / "manifest.jsonl").read_text() == events
    epochs = (work / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 1
