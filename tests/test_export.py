"""Model bundles: ONNX export (core/export.py), bundle.json (core/bundle.py) and the
onnxruntime runner (core/runtime.py). Encoders have random weights: parity and plumbing only."""

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import core.bundle
from core.bundle import BUNDLE_FILE, FORMAT_VERSION, UntrainedBundleWarning, default_bundle_path, read_bundle
from core.errors import BundleError, CheckpointError
from core.export import export_bundle
from core.models import create_encoder
from core.runtime import PointEncoder, choose_providers
from core.sampling import unit_sphere


def _torch_embed(model, points: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(points, np.float32))).numpy()


@pytest.fixture(scope="module")
def runner(tiny_bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBundleWarning)
        return PointEncoder(tiny_bundle.path, device="cpu")


def _clouds(rng, batch, n):
    """Random clouds on the unit sphere, as the sampler leaves them (the encoder's input)."""
    points = rng.normal(size=(batch, n, 6)).astype(np.float32)
    points[..., 3:] = rng.uniform(0, 1, size=(batch, n, 3))
    return unit_sphere(points)


def test_runner_is_invariant_to_translation_and_scale_of_xyz(runner, rng):
    """PointEncoder centres and scales each cloud to the unit sphere before the encoder,
    so a shifted and scaled copy embeds the same, whoever made the points."""
    points = _clouds(rng, 3, 512)
    moved = points.copy()
    moved[..., :3] = points[..., :3] * 7.5 + np.array([3.0, -20.0, 0.5], np.float32)
    np.testing.assert_allclose(runner.embed_points(moved), runner.embed_points(points), atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch,n_points", [(1, 512), (5, 512), (2, 777), (3, 2000)])
def test_onnx_matches_torch_fp32(tiny_bundle, runner, rng, batch, n_points):
    """Dynamic batch and point count: the exported graph equals the torch model."""
    points = _clouds(rng, batch, n_points)
    got = runner.embed_points(points)
    assert got.shape == (batch, 384)
    assert got.dtype == np.float32
    assert np.abs(got - _torch_embed(tiny_bundle.model, points)).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    if batch > 1:  # the tolerance is far below what separates different objects
        assert np.abs(got[0] - got[1]).max() > 1e-3


def _coloured_mesh_file(tmp_path):
    import trimesh

    mesh = trimesh.creation.annulus(r_min=0.3, r_max=1.0, height=0.4)
    mesh.apply_translation([2.0, -1.0, 5.0])
    mesh.visual.vertex_colors = np.column_stack([
        (np.arange(len(mesh.vertices)) * 37) % 256, np.full(len(mesh.vertices), 200),
        (np.arange(len(mesh.vertices)) * 11) % 256, np.full(len(mesh.vertices), 255),
    ]).astype(np.uint8)
    path = tmp_path / "ring.ply"
    mesh.export(path)
    return path


def test_onnx_matches_torch_on_a_sampled_mesh(tiny_bundle, runner, tmp_path):
    from core.meshio import load_points

    path = _coloured_mesh_file(tmp_path)
    points = load_points(path, tiny_bundle.bundle.num_points, seed=0)
    assert points.shape == (512, 9)
    expected = _torch_embed(tiny_bundle.model, points[None])
    got = runner.embed_points(points)  # (N, 9): one object, normals dropped
    assert got.shape == (1, 384)
    assert np.abs(got - expected).max() <= 1e-4
    (name, vector), = list(runner.embed_files([path], seed=0))
    assert name == str(path)
    np.testing.assert_array_equal(vector, got[0])


def test_batching_inside_the_runner_does_not_change_results(runner, rng):
    points = _clouds(rng, 5, 512)
    np.testing.assert_allclose(runner.embed_points(points, batch_size=2), runner.embed_points(points, batch_size=16),
                               atol=1e-5, rtol=0)


def test_fp16_bundle_runs_close_to_fp32(tiny_bundle, runner, rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBundleWarning)
        half = PointEncoder(tiny_bundle.path, device="cpu", precision="fp16")
    assert half.session.get_inputs()[0].type == "tensor(float)"  # fp32 in and out
    points = _clouds(rng, 4, 512)
    a, b = runner.embed_points(points), half.embed_points(points)
    assert b.dtype == np.float32 and b.shape == a.shape
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99, cosine


def test_fp16_encoder_passes_the_onnx_checker(tiny_bundle):
    """Other ONNX tools need nodes in topological order, which the fp16 converter breaks."""
    import onnx

    onnx.checker.check_model(onnx.load(str(tiny_bundle.bundle.onnx_path("fp16"))), full_check=True)


def _index_outputs(path, points):
    """Every ArgMax (FPS step) and TopK (kNN) index tensor of an ONNX encoder, exposed as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    names = [n.output[0] for n in model.graph.node if n.op_type == "ArgMax"]
    names += [n.output[1] for n in model.graph.node if n.op_type == "TopK"]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"points": points})


def test_fp16_bundle_picks_the_same_points_as_fp32(tiny_bundle, rng):
    """fp16 bundles keep FPS and kNN in float32: the same centres and neighbours as fp32, so the
    fp16 error is small next to the distance between different objects' embeddings."""
    points = _clouds(rng, 8, 512)
    full = _index_outputs(tiny_bundle.bundle.onnx_path("fp32"), points)
    half = _index_outputs(tiny_bundle.bundle.onnx_path("fp16"), points)
    assert len(full) == len(half) == tiny_bundle.bundle.config["num_group"]
    for step, (a, b) in enumerate(zip(full, half)):
        if a.ndim == 3 and a.shape[-1] == tiny_bundle.bundle.config["group_size"]:
            a, b = np.sort(a, -1), np.sort(b, -1)  # kNN order within a group is not defined
        np.testing.assert_array_equal(a, b, err_msg=f"index tensor {step}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBundleWarning)
        e32 = PointEncoder(tiny_bundle.path, device="cpu").embed_points(points)
        e16 = PointEncoder(tiny_bundle.path, device="cpu", precision="fp16").embed_points(points)
    between = np.linalg.norm(e32[:, None] - e32[None], axis=-1)[~np.eye(len(e32), dtype=bool)]
    assert np.linalg.norm(e16 - e32, axis=1).max() < 0.1 * between.min()


def test_runner_rejects_bad_point_arrays(runner):
    with pytest.raises(BundleError, match="points must be"):
        runner.embed_points(np.zeros((2, 512, 3), np.float32))
    with pytest.raises(BundleError, match="at least 32 points"):
        runner.embed_points(np.random.rand(1, 20, 6))
    assert runner.dim == 384 and runner.num_points == 512
    assert runner.providers == ["CPUExecutionProvider"]


def test_graph_has_no_loop_and_fps_is_four_ops_a_step(tiny_bundle):
    import collections

    import onnx

    graph = onnx.load(str(tiny_bundle.bundle.onnx_path("fp32"))).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    groups = tiny_bundle.bundle.config["num_group"]
    assert not {"Loop", "Scan", "If"} & set(ops), ops
    assert ops["ArgMax"] == groups - 1
    assert ops["GatherND"] == groups - 2
    assert ops["Min"] == groups - 2
    assert ops["TopK"] == 1
    assert [i.name for i in graph.input] == ["points"] and [o.name for o in graph.output] == ["embedding"]


def test_bundle_json_describes_the_bundle(tiny_bundle):
    meta = json.loads((tiny_bundle.path / BUNDLE_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert meta["space"] == {"name": "minilm", "dim": 384}
    assert meta["encoder"] == tiny_bundle.model.config.to_dict()
    assert meta["encoder"]["name"] == "pointbert-tiny"
    assert meta["num_points"] == 512 and meta["channels"] == 6
    assert meta["files"] == {"fp32": "encoder.onnx", "fp16": "encoder.fp16.onnx", "weights": "encoder.safetensors"}
    assert meta["trained"] is False
    assert {"created", "ulip2_version", "source"} <= set(meta["provenance"])
    for name in meta["files"].values():
        assert (tiny_bundle.path / name).is_file()
    assert sorted(p.name for p in tiny_bundle.path.iterdir()) == sorted([BUNDLE_FILE, *meta["files"].values()])
    assert not [p for p in tiny_bundle.path.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_bundle_weights_rebuild_the_torch_encoder(tiny_bundle, runner, rng):
    """The float16 weights in the bundle give back the encoder the ONNX file runs (to fp16 rounding)."""
    from core.export import load_bundle_model

    model = load_bundle_model(tiny_bundle.bundle).eval()
    assert model.config == tiny_bundle.model.config
    for key, value in tiny_bundle.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value.half().to(value.dtype))
    points = _clouds(rng, 3, 512)
    with torch.inference_mode():
        rebuilt = model(torch.from_numpy(points)).numpy()
    assert np.abs(rebuilt - runner.embed_points(points)).max() < 5e-3


def test_untrained_bundle_warns(tiny_bundle):
    with pytest.warns(UntrainedBundleWarning, match="untrained"):
        bundle = read_bundle(tiny_bundle.path)
    assert bundle.trained is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_bundle(tiny_bundle.path / BUNDLE_FILE, warn_untrained=False)


def test_export_with_checkpoint_is_trained_and_carries_its_weights(tmp_path, rng):
    from safetensors.torch import save_file

    source = create_encoder("pointbert-tiny", embed_dim=384, seed=11).eval()
    ckpt = tmp_path / "encoder.safetensors"
    save_file(source.state_dict(), str(ckpt))
    steps = []
    bundle = export_bundle(tmp_path / "trained", config="pointbert-tiny", space="minilm", checkpoint=ckpt,
                           on_step=steps.append)
    assert bundle.trained is True
    assert any("loading" in s for s in steps) and any("ONNX" in s for s in steps)
    meta = json.loads((tmp_path / "trained" / BUNDLE_FILE).read_text())
    assert meta["trained"] is True
    assert meta["files"] == {"fp32": "encoder.onnx", "weights": "encoder.safetensors"}
    assert meta["provenance"]["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained bundle does not warn
        encoder = PointEncoder(tmp_path / "trained", device="cpu")
    points = _clouds(rng, 2, 512)
    assert np.abs(encoder.embed_points(points) - _torch_embed(source, points)).max() <= 1e-4
    with pytest.raises(BundleError, match="--fp16"):
        encoder.bundle.onnx_path("fp16")


def test_export_refuses_a_non_empty_folder(tmp_path, tiny_bundle):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        export_bundle(out, model=tiny_bundle.model)
    assert (out / "notes.txt").read_text() == "mine"
    bundle = export_bundle(out, model=tiny_bundle.model, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert (out / BUNDLE_FILE).is_file() and bundle.path == out.resolve()


def test_failed_export_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    parent = tmp_path / "out"
    parent.mkdir()
    with pytest.raises(CheckpointError):
        export_bundle(parent / "b", config="pointbert-tiny", checkpoint=bad)
    assert list(parent.iterdir()) == []


def test_export_refuses_a_model_for_another_space(tiny_bundle, tmp_path):
    model = create_encoder("pointbert-tiny", embed_dim=1280)
    with pytest.raises(BundleError, match="1280"):
        export_bundle(tmp_path / "x", model=model, space="minilm")


def _copy(tiny_bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle.path, dst)
    return dst


def test_missing_bundle_json_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError):
        read_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("corrupt", [
    lambda meta: "{ not json",
    lambda meta: json.dumps({k: v for k, v in meta.items() if k != "space"}),
    lambda meta: json.dumps({**meta, "space": "minilm"}),
    lambda meta: json.dumps({**meta, "num_points": "many"}),
    lambda meta: json.dumps([1, 2]),
])
def test_malformed_bundle_json_is_a_bundle_error(tiny_bundle, tmp_path, corrupt):
    dst = _copy(tiny_bundle, tmp_path)
    meta = json.loads((dst / BUNDLE_FILE).read_text())
    (dst / BUNDLE_FILE).write_text(corrupt(meta))
    with pytest.raises(BundleError, match="malformed"):
        read_bundle(dst, warn_untrained=False)


def test_newer_format_version_is_refused(tiny_bundle, tmp_path):
    dst = _copy(tiny_bundle, tmp_path)
    meta = json.loads((dst / BUNDLE_FILE).read_text())
    (dst / BUNDLE_FILE).write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(BundleError, match="upgrade"):
        read_bundle(dst, warn_untrained=False)


def test_missing_onnx_file_is_a_bundle_error(tiny_bundle, tmp_path):
    dst = _copy(tiny_bundle, tmp_path)
    (dst / "encoder.fp16.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.fp16.onnx"):
        read_bundle(dst, warn_untrained=False)


def test_choose_providers_on_this_cpu_machine():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime here has CUDA")
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(BundleError, match=r"ulip2\[gpu\]"):
        choose_providers("cuda")
    with pytest.raises(BundleError, match="unknown device"):
        choose_providers("tpu")


def test_default_bundle_path_follows_the_environment(monkeypatch, tmp_path, tiny_bundle):
    monkeypatch.setenv("ULIP2_BUNDLE", str(tiny_bundle.path))
    assert default_bundle_path() == tiny_bundle.path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBundleWarning)
        assert PointEncoder(device="cpu").bundle.path == tiny_bundle.path.resolve()
    monkeypatch.delenv("ULIP2_BUNDLE")
    assert default_bundle_path() == core.bundle.SHIPPED_BUNDLE
    monkeypatch.setattr(core.bundle, "SHIPPED_BUNDLE", tmp_path / "none")
    with pytest.raises(BundleError, match="ULIP2_BUNDLE") as exc:
        default_bundle_path()
    assert "ulip2 export" in str(exc.value)


def test_the_shipped_default_bundle_is_trained_and_recorded():
    """The default model in the package: trained, minilm, with its held-out zero-shot top-1 and
    the D2 shape baseline of the same run recorded (training/recipes/default_model.py ship);
    zero-shot over 37 classes far above chance and above the baseline."""
    bundle = read_bundle(core.bundle.SHIPPED_BUNDLE)
    assert bundle.trained and bundle.space == "minilm"
    result = json.loads((bundle.path / "evaluation.json").read_text())
    assert result["zero_shot_top1"] > 10 * result["chance"] and result["held_out"] == 118
    assert 0 < result["d2_nearest_neighbour_top1"] < result["zero_shot_top1"]
    encoder = PointEncoder(bundle, device="cpu")
    rng = np.random.default_rng(0)
    vectors = encoder.embed_points(rng.random((2, bundle.num_points, 6), dtype=np.float32))
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_failed_bundle_write_leaves_the_old_bundle_and_no_staging(tmp_path):
    """core.paths.replacing_folder, which every bundle write goes through: an error inside
    keeps the folder that was there; success swaps the new one in."""
    from core.paths import replacing_folder

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "bundle.json").write_text("old")
    with pytest.raises(RuntimeError):
        with replacing_folder(target) as staging:
            (staging / "bundle.json").write_text("new")
            raise RuntimeError("export died half way")
    assert (target / "bundle.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with replacing_folder(target) as staging:
        (staging / "bundle.json").write_text("new")
    assert (target / "bundle.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_the_name_default_opens_the_default_bundle_everywhere(monkeypatch, tmp_path):
    """`--bundle default`, `info default`, `train --init default`: the name is the bundle
    commands use when none is named (a folder called default here still wins)."""
    from core.bundle import SHIPPED_BUNDLE, bundle_path, read_bundle

    monkeypatch.delenv("ULIP2_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert read_bundle("default").path == SHIPPED_BUNDLE.resolve()
    assert PointEncoder("default", device="cpu").bundle.path == SHIPPED_BUNDLE.resolve()
    (tmp_path / "default").mkdir()
    assert bundle_path("default") == Path("default")
