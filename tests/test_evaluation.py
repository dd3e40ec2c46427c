"""Evaluation loaders read each layout (small files written here in that layout), and
`ulip2 eval` runs them end to end on a tiny random-weight bundle (mechanics, not accuracy;
the accuracy maths is checked on hand-made embeddings)."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest
import trimesh

from cli.main import main
from core.errors import Ulip2Error
from training.augment import subsample
from core.spaces.ranking import zero_shot
from training.evaluation import SCANOBJECTNN_CLASSES, load_eval_set


def _cloud(rng, n=600):
    return rng.normal(size=(n, 3)).astype(np.float32) * 3 + 5  # not normalised: loaders must do it


def _check_clouds(evalset, rgb=None):
    for cloud in evalset.points:
        assert cloud.shape[1] == 6
        assert np.abs(np.linalg.norm(cloud[:, :3], axis=1).max() - 1) < 1e-5
        assert np.abs(cloud[:, :3].mean(0)).max() < 1e-4
        if rgb is not None:
            assert np.allclose(cloud[:, 3:], rgb)


def test_modelnet40_layout(tmp_path, rng):
    clouds = np.empty(3, dtype=object)
    for i in range(3):
        clouds[i] = {"xyz": _cloud(rng)}
    np.save(tmp_path / "modelnet40_colored_10k_pc.npy", clouds, allow_pickle=True)
    (tmp_path / "modelnet40_test_split_10k_colored.json").write_text(
        json.dumps([{"category": c} for c in ("chair", "night_stand", "chair")]))
    (tmp_path / "modelnet40_shape_names.txt").write_text("airplane\nchair\nnight_stand\n")
    evalset = load_eval_set(tmp_path, 512)
    assert evalset.name == "modelnet40"
    assert evalset.labels == ["chair", "night_stand", "chair"]
    assert evalset.classnames == ["airplane", "chair", "night_stand"]
    _check_clouds(evalset, rgb=0.4)


def test_objaverse_lvis_layout(tmp_path, rng):
    files, mapping = {}, {}
    for i, category in enumerate(["teapot", "bat_(animal)", "teapot"]):
        uid = f"uid{i}"
        rgb = rng.integers(0, 256, (600, 3)).astype(np.float32)
        (tmp_path / "pcs").mkdir(exist_ok=True)
        np.save(tmp_path / "pcs" / f"{uid}.npy", {"xyz": _cloud(rng), "rgb": rgb}, allow_pickle=True)
        files[uid], mapping[uid] = f"pcs/{uid}.npy", category
    (tmp_path / "lvis.json").write_text(json.dumps(files))
    (tmp_path / "objaverse_lvis_metadata.json").write_text(json.dumps({"value_to_key_mapping": mapping}))
    evalset = load_eval_set(tmp_path, 512)
    assert evalset.name == "objaverse-lvis"
    assert evalset.labels == ["teapot", "bat_(animal)", "teapot"]
    assert evalset.classnames == ["bat_(animal)", "teapot"]
    _check_clouds(evalset)
    assert all(0 <= c[:, 3:].min() and c[:, 3:].max() <= 1 for c in evalset.points)  # 0..255 rescaled
    assert evalset.verbatim, "LVIS names enter the prompts as ULIP's test writes them"


def test_objaverse_lvis_classes_are_all_keys_in_their_order(tmp_path, rng):
    """ULIP's test ranks against metadata['all_keys'] (every LVIS class, even those without
    a test item), in that order."""
    (tmp_path / "pcs").mkdir()
    np.save(tmp_path / "pcs" / "u.npy", {"xyz": _cloud(rng), "rgb": np.full((600, 3), 0.5)}, allow_pickle=True)
    (tmp_path / "lvis.json").write_text(json.dumps({"u": "pcs/u.npy"}))
    (tmp_path / "objaverse_lvis_metadata.json").write_text(json.dumps(
        {"value_to_key_mapping": {"u": "teapot"}, "all_keys": ["Band_Aid", "teapot", "bat_(animal)"]}))
    assert load_eval_set(tmp_path, 512).classnames == ["Band_Aid", "teapot", "bat_(animal)"]


class _Shell:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("layout", ["modelnet40", "lvis"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, rng, monkeypatch, layout):
    """ULIP's .npy files are pickled dicts; a restricted unpickler reads those and refuses
    anything else, naming the file, before any code in it runs."""
    monkeypatch.chdir(tmp_path)
    evil = np.empty(1, dtype=object)
    evil[0] = {"xyz": _Shell()}
    if layout == "modelnet40":
        np.save(tmp_path / "modelnet40_colored_10k_pc.npy", evil, allow_pickle=True)
        (tmp_path / "modelnet40_test_split_10k_colored.json").write_text(json.dumps([{"category": "chair"}]))
        (tmp_path / "modelnet40_shape_names.txt").write_text("chair\n")
        bad = tmp_path / "modelnet40_colored_10k_pc.npy"
    else:
        (tmp_path / "pcs").mkdir()
        np.save(tmp_path / "pcs" / "u.npy", np.array({"xyz": _Shell()}, dtype=object), allow_pickle=True)
        (tmp_path / "lvis.json").write_text(json.dumps({"u": "pcs/u.npy"}))
        (tmp_path / "objaverse_lvis_metadata.json").write_text(json.dumps({"value_to_key_mapping": {"u": "x"}}))
        bad = tmp_path / "pcs" / "u.npy"
    with pytest.raises(Ulip2Error) as err:
        load_eval_set(tmp_path, 512)
    assert str(bad) in str(err.value) and "refusing posix.system" in str(err.value)
    assert not (tmp_path / "PWNED").exists()


def test_an_lvis_path_outside_the_data_set_is_refused(tmp_path, rng):
    outside = tmp_path / "outside.npy"
    np.save(outside, {"xyz": _cloud(rng)}, allow_pickle=True)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "lvis.json").write_text(json.dumps({"u": "../outside.npy"}))
    (tmp_path / "set" / "objaverse_lvis_metadata.json").write_text(json.dumps({"value_to_key_mapping": {"u": "x"}}))
    with pytest.raises(Ulip2Error, match="leaves the data set's folder"):
        load_eval_set(tmp_path / "set", 512)


def test_scanobjectnn_layout(tmp_path, rng):
    path = tmp_path / "test_objectdataset_augmentedrot_scale75.h5"
    with h5py.File(path, "w") as fh:
        fh["data"] = np.stack([_cloud(rng, 2048) for _ in range(4)])
        fh["label"] = np.array([0, 4, 14, 4], dtype=np.int64)
    evalset = load_eval_set(path, 512)
    assert evalset.labels == ["bag", "chair", "toilet", "chair"]
    assert evalset.classnames == list(SCANOBJECTNN_CLASSES)
    _check_clouds(evalset, rgb=0.4)


def _mesh_library(root):
    for label, make in (("box", trimesh.creation.box), ("ball", trimesh.creation.icosphere)):
        (root / label).mkdir(parents=True)
        for i in range(2):
            make().export(root / label / f"{label}{i}.glb")
    (root / "ball" / "broken.glb").write_bytes(b"not a mesh")


def test_mesh_folder_and_csv_layouts(tmp_path):
    _mesh_library(tmp_path / "lib")
    evalset = load_eval_set(tmp_path / "lib", 256)
    assert sorted(evalset.labels) == ["ball", "ball", "box", "box"]
    assert evalset.classnames == ["ball", "box"]
    assert [f["path"].endswith("broken.glb") for f in evalset.failed] == [True]
    assert all(c.shape == (256, 6) for c in evalset.points)

    (tmp_path / "lib" / "labels.csv").write_text("path,label\nbox/box0.glb,crate\nball/ball1.glb,sphere\n")
    from_csv = load_eval_set(tmp_path / "lib" / "labels.csv", 256)
    assert from_csv.labels == ["crate", "sphere"]


def test_zero_shot_accuracy_maths():
    classes = np.eye(3, dtype=np.float32)
    embeddings = np.array([[1, 0.1, 0], [0.2, 1, 0], [1, 0, 0.9]], np.float32)
    result = zero_shot(embeddings, ["a", "b", "c"], classes, ["a", "b", "c"])
    assert result["top1"] == pytest.approx(2 / 3)
    assert result["top5"] == 1.0
    assert result["per_class_top1"] == {"a": 1.0, "b": 1.0, "c": 0.0}


def test_subsample_gives_exactly_n_points(rng):
    cloud = rng.random((100, 6))
    def rng():
        return np.random.default_rng(0)

    assert subsample(cloud, 40, rng()).shape == (40, 6)
    assert subsample(cloud, 150, rng()).shape == (150, 6)
    np.testing.assert_array_equal(subsample(cloud, 40, rng()), subsample(cloud, 40, rng()))
    assert len(np.unique(subsample(cloud, 40, rng()), axis=0)) == 40  # no repeats when there are enough


def test_eval_command_on_a_mesh_folder(tmp_path, tiny_bundle, capsys):
    _mesh_library(tmp_path / "lib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", str(tmp_path / "lib"), "--bundle", str(tiny_bundle.path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and result["classes"] == 2
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert len(result["failed"]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", str(tmp_path / "lib"), "--bundle", str(tiny_bundle.path)]) == 0
    out = capsys.readouterr()
    assert "top-1" in out.out and "lib" in out.out and "broken.glb" in out.err


def test_files_eval_does_not_read_are_named_and_counted(tmp_path, tiny_bundle, capsys):
    """Tried as a new user would: an .fbx in a label folder and a mesh beside the label folders
    were left out without a word ("n" one short, "failed": []). Each is named with why, and
    evaluated + failed + skipped are the asset files there (a text file is no asset)."""
    lib = tmp_path / "lib"
    _mesh_library(lib)
    trimesh.creation.box().export(lib / "box" / "box2.off")  # trimesh reads .off: evaluated
    (lib / "box" / "crate.fbx").write_bytes(b"Kaydara FBX Binary  \x00")
    trimesh.creation.box().export(lib / "stray.glb")
    (lib / "box" / "notes.txt").write_text("not an asset")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", str(lib), "--bundle", str(tiny_bundle.path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    reasons = {entry["path"]: entry["reason"] for entry in result["skipped"]}
    assert reasons == {
        str(lib / "box" / "crate.fbx"): "ulip2 eval does not read .fbx files; ulip2 index and ulip2 triplets build "
                                        "read them",
        str(lib / "stray.glb"): f"not in a label subfolder ({lib}/<label>/stray.glb)"}
    assert (result["n"], len(result["failed"]), len(result["skipped"])) == (5, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["eval", str(lib), "--bundle", str(tiny_bundle.path)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {lib / 'box' / 'crate.fbx'}: ulip2 eval does not read .fbx files" in err
    assert f"skipped {lib / 'stray.glb'}: not in a label subfolder" in err


def test_a_folder_without_label_subfolders_names_the_layouts(tmp_path):
    """Tried as a new user would: meshes straight in the folder said "nothing to evaluate";
    now the error says how an evaluation folder is laid out."""
    trimesh.creation.box().export(tmp_path / "box.glb")
    layout = "no labelled meshes: an evaluation folder holds one subfolder per label"
    with pytest.raises(Ulip2Error, match=layout) as error:
        load_eval_set(tmp_path, 512)
    assert str(error.value).endswith(f"(skipped {tmp_path / 'box.glb'}: not in a label subfolder "
                                     f"({tmp_path}/<label>/box.glb))")
