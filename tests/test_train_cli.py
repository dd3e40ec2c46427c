"""End to end without Blender: a triplet store written with core's sampler and written
captions -> `ulip2 features` (minilm, for real) -> `ulip2 train --bundle` (pointbert-tiny,
few steps: mechanics, not accuracy) -> the bundle embeds a mesh and says it is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from cli.main import main
from core.meshio import load_points
from core.triplets import TripletStore, key_for_file
from training.features import TripletFeatures, cache_folder

pytestmark = pytest.mark.train

SHAPES = {
    "box": lambda: trimesh.creation.box(),
    "ball": lambda: trimesh.creation.icosphere(),
    "pipe": lambda: trimesh.creation.cylinder(radius=0.1, height=2.0),
    "cone": lambda: trimesh.creation.cone(radius=1.0, height=1.0),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    store = TripletStore(root / "store", create=True)
    for i in range(16):
        name = list(SHAPES)[i % 4]
        path = root / f"{name}_{i}.glb"
        mesh = SHAPES[name]()
        mesh.apply_scale(1 + 0.1 * i)
        mesh.export(path)
        key = key_for_file(path)
        with store.new_record(key) as writer:
            Image.new("RGBA", (16, 16), (i * 10, 0, 0, 255)).save(writer.view_path(0))
            writer.commit(load_points(path, 512, seed=i), {
                "source": {"path": str(path), "object": name, "kind": "file"},
                "views": {"files": ["view_00.png"], "resolution": 16, "engine": "test", "samples": 0,
                          "elevation_deg": 0.0, "azimuth_deg": [0.0]},
                "facts": {}})
        store.set_captions(key, {"captioner": "test", "model": None, "vision_model": False, "space": "minilm",
                                 "ranking": "text-consensus", "k": 1,
                                 "views": [{"candidates": [{"text": f"a {name}", "score": 1.0}], "chosen": 0,
                                            "caption": f"a {name}"}]})
    return store


def test_features_then_train_then_embed(store, tmp_path, capsys):
    assert main(["features", str(store.root)]) == 0
    folder = cache_folder(store.root, "minilm")
    features = TripletFeatures.load(folder)
    assert len(features) == 16 and features.dim == 384 and features.image is None
    assert features.points.shape == (16, 512, 6) and features.points.dtype == np.float16
    capsys.readouterr()

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert main(["train", str(store.root), "--out", str(run), "--config", "pointbert-tiny", "--epochs", "2",
                 "--batch-size", "8", "--bundle", str(bundle)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 2 and result["bundle"] == str(bundle.resolve())
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["trained"] is True and meta["space"] == {"name": "minilm", "dim": 384}

    mesh = store.root.parent / "box_0.glb"
    assert main(["embed", "--bundle", str(bundle), str(mesh)]) == 0
    captured = capsys.readouterr()
    assert "untrained" not in captured.err
    vector = np.array(json.loads(captured.out)["embeddings"][0]["embedding"])
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-4


def test_resume_flag_continues_a_run(store, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(store.root), "--out", str(run), "--config", "pointbert-tiny", "--batch-size", "8"]
    assert main(args + ["--epochs", "1"]) == 0
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_train_refuses_a_store_smaller_than_a_batch(store, tmp_path, capsys):
    assert main(["train", str(store.root), "--out", str(tmp_path / "r"), "--config", "pointbert-tiny",
                 "--batch-size", "64"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err


def test_train_from_a_bundle_fine_tunes_its_encoder(store, tmp_path, tiny_bundle, capsys):
    """--init BUNDLE takes the bundle's config and weights (pointbert-tiny here, whatever --config says)."""
    run = tmp_path / "run"
    assert main(["train", str(store.root), "--out", str(run), "--init", str(tiny_bundle.path), "--epochs", "1",
                 "--batch-size", "8", "--lr", "1e-9"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["encoder_config"]["name"] == "pointbert-tiny"
    start = tiny_bundle.model.state_dict()["reduce_dim.weight"]
    assert torch.allclose(state["model"]["reduce_dim.weight"], start, atol=1e-3)  # tiny lr: barely moved


def test_train_on_a_scorers_frames_and_the_bundle_carries_it(store, tmp_path, capsys):
    """--upright: the trainer turns samples through the scorer (a tiny one fitted on random
    clouds: mechanics), the exported bundle carries it, `info` says so; beside --random-up
    it is refused with the reason."""
    from training.upright import fit_upright

    scorer = tmp_path / "up.npz"
    fit_upright(np.random.default_rng(0).normal(size=(8, 256, 3)).astype(np.float32), hidden=8, steps=5).save(scorer)
    args = ["train", str(store.root), "--config", "pointbert-tiny", "--epochs", "1", "--batch-size", "8",
            "--upright", str(scorer)]
    bundle = tmp_path / "bundle"
    assert main(args + ["--out", str(tmp_path / "run"), "--bundle", str(bundle)]) == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["config"]["upright"] == str(scorer)
    assert json.loads((bundle / "bundle.json").read_text())["upright"] == "upright.npz"
    capsys.readouterr()
    assert main(["info", str(bundle)]) == 0
    assert "up axis    upright.npz" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "other"), "--random-up"]) == 2
    assert "random_up and upright are two answers" in capsys.readouterr().err
