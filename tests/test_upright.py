"""The up-axis scorer (core/upright.py): what it describes, that a file saved z-up or x-up
comes back to its y-up twin's frame, how a bundle carries it, and what a bad scorer file
gets. The scorer here is fitted in a few seconds on a handful of trimesh shapes standing
y-up (mechanics, not the shipped figures)."""

import json
import shutil

import numpy as np
import pytest
import trimesh

from core.bundle import read_bundle
from core.errors import BundleError
from core.export import add_upright
from core.runtime import PointEncoder
from core.sampling import unit_sphere
from core.upright import TURNS, UPS, Upright, describe
from training.recipes.corpus_model import FRAMES

pytest.importorskip("torch")


def _cloud(mesh: trimesh.Trimesh, seed: int, n: int = 1024) -> np.ndarray:
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return unit_sphere(np.concatenate([points, np.full((n, 3), 0.5)], axis=1)[None])[0]


def _standing(seed: int) -> trimesh.Trimesh:
    """A table (top and four legs) or a column, y-up, of random proportions."""
    rng = np.random.default_rng(seed)
    if seed % 2:
        return trimesh.creation.cylinder(radius=rng.uniform(0.1, 0.3), height=rng.uniform(1.5, 3),
                                         transform=trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    w, d, h = rng.uniform(0.8, 2), rng.uniform(0.6, 1.5), rng.uniform(0.5, 1)
    parts = [trimesh.creation.box([w, 0.06, d], trimesh.transformations.translation_matrix([0, h, 0]))]
    parts += [trimesh.creation.box([0.06, h, 0.06], trimesh.transformations.translation_matrix([x, h / 2, z]))
              for x in (-w / 2.2, w / 2.2) for z in (-d / 2.2, d / 2.2)]
    return trimesh.util.concatenate(parts)


@pytest.fixture(scope="module")
def scorer():
    from training.upright import fit_upright

    clouds = np.stack([_cloud(_standing(s), s) for s in range(24)])
    return fit_upright(clouds, hidden=32, steps=300)


def _turned(cloud: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    out = cloud.copy()
    out[:, :3] = cloud[:, :3] @ rotation.T
    return out


def test_each_description_is_unchanged_by_a_turn_about_its_own_axis():
    cloud = _cloud(_standing(0), 0)[None, :, :3]
    for k, up in enumerate(UPS):
        a, b = [i for i in range(3) if up[i] == 0]
        quarter = np.eye(3)
        quarter[[a, a, b, b], [a, b, a, b]] = [0, -1, 1, 0]  # a quarter turn about `up`
        assert np.allclose(describe(cloud @ quarter.T)[:, k], describe(cloud)[:, k], atol=1e-5)
        assert not np.allclose(describe(cloud)[:, k], describe(cloud)[:, (k + 1) % len(UPS)], atol=1e-3)


def test_turns_take_each_candidate_onto_y():
    for turn, up in zip(TURNS, UPS):
        assert np.allclose(turn @ up, [0, 1, 0]) and np.isclose(np.linalg.det(turn), 1)


def test_a_z_up_or_x_up_copy_comes_back_to_the_y_up_frame(scorer):
    """Unseen shapes: upright clouds stay as they are, turned ones come back exactly."""
    for seed in (100, 101, 102, 103):
        cloud = _cloud(_standing(seed), seed)
        assert np.allclose(scorer.turn(cloud[None])[0], cloud), f"seed {seed}: an upright cloud was turned"
        for frame in ("z-up", "x-up"):
            back = scorer.turn(_turned(cloud, FRAMES[frame])[None])[0]
            assert np.allclose(back, cloud, atol=1e-5), f"seed {seed}, {frame}: not turned back upright"


def test_a_bundle_carries_the_scorer_and_its_encoder_turns_clouds_upright(tmp_path, tiny_bundle, scorer):
    """pointbert-tiny, random weights: the same embedding for a table y-up and z-up once the
    bundle carries the scorer; without it the two differ."""
    plain = PointEncoder(tiny_bundle.bundle, device="cpu")
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    bundle = add_upright(copy, scorer)
    assert bundle.upright == "upright.npz" and read_bundle(copy, warn_untrained=False).upright == "upright.npz"
    upright = PointEncoder(bundle, device="cpu")
    cloud = _cloud(_standing(104), 104)
    pair = np.stack([cloud, _turned(cloud, FRAMES["z-up"])])
    with_scorer, without = upright.embed_points(pair), plain.embed_points(pair)
    assert float(with_scorer[0] @ with_scorer[1]) > 0.9999
    assert float(without[0] @ without[1]) < 0.999
    assert np.allclose(with_scorer[0], without[0], atol=1e-5)  # upright already: untouched


def _saved_lying(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` (y-up) as a y-up reader sees it when it was saved z-up: lying."""
    saved = mesh.copy()
    saved.apply_transform(np.vstack([np.hstack([FRAMES["z-up"], [[0], [0], [0]]]), [0, 0, 0, 1]]))
    return saved


def test_clouds_whose_frame_is_known_skip_the_scorer(tmp_path, tiny_bundle, scorer):
    """pointbert-tiny, random weights: a table lying as a z-up file reads is turned upright
    unless its frame is known (per cloud); embed_files knows it from the format, so a .glb
    (y-up by specification) is read as it stands and an .obj of the same mesh is turned."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    encoder = PointEncoder(add_upright(copy, scorer), device="cpu")
    plain = PointEncoder(tiny_bundle.bundle, device="cpu")
    table = _standing(104)
    lying = _turned(_cloud(table, 104), FRAMES["z-up"])
    known, unknown = encoder.embed_points(np.stack([lying, lying]), frame_known=[True, False])
    assert np.allclose(known, plain.embed_points(lying)[0], atol=1e-5), "known: as it stands"
    assert np.allclose(unknown, plain.embed_points(_turned(lying, TURNS[1]))[0], atol=1e-5), "unknown: turned upright"
    saved = _saved_lying(table)
    saved.export(tmp_path / "table.glb")
    saved.export(tmp_path / "table.obj")
    (_, glb), (_, obj) = encoder.embed_files([tmp_path / "table.glb", tmp_path / "table.obj"])
    (_, glb_plain), (_, obj_turned) = plain.embed_files([tmp_path / "table.glb", tmp_path / "table.obj"])
    assert np.allclose(glb, glb_plain, atol=1e-5), ".glb states its frame: the scorer is not asked"
    assert not np.allclose(obj, obj_turned, atol=1e-3), ".obj does not: the scorer turns it"


def test_the_served_mesh_search_reads_an_uploaded_glb_as_it_stands(tmp_path, tiny_bundle, scorer):
    """pointbert-tiny, random weights: a lying table indexed from its .glb (frame known, not
    turned) is found at cosine 1 by the same .glb uploaded to `ulip2 serve`, so the upload is
    read as the index read the file, not turned by the bundle's scorer."""
    pytest.importorskip("uvicorn")
    import urllib.request

    from core.library.indexer import index_paths
    from core.library.store import Library
    from serve.app import create_app
    from served import serving

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    bundle = add_upright(copy, scorer)
    (tmp_path / "assets").mkdir()
    _saved_lying(_standing(104)).export(tmp_path / "assets" / "table.glb")
    with Library(tmp_path / "lib.sqlite") as lib:
        index_paths([tmp_path / "assets"], lib, PointEncoder(bundle, device="cpu"), workers=0, thumbnails=False)
    with serving(create_app(tmp_path / "lib.sqlite", bundle)) as base:
        request = urllib.request.Request(base + "/v1/search/mesh?type=glb&k=1", method="POST",
                                         data=(tmp_path / "assets" / "table.glb").read_bytes())
        with urllib.request.urlopen(request, timeout=30) as response:
            hits = json.loads(response.read())["hits"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_bad_scorer_file_is_refused_with_its_name(tmp_path, tiny_bundle, scorer):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    add_upright(copy, scorer)
    target = copy / "upright.npz"
    np.savez(target, w1=np.array([object()], dtype=object))  # a pickle inside: never loaded
    with pytest.raises(BundleError, match="upright.npz: not an up-axis scorer"):
        PointEncoder(read_bundle(copy, warn_untrained=False), device="cpu")
    arrays = dict(scorer.arrays, w2=np.zeros((3, 5), np.float32))
    np.savez(target, bins=np.array(scorer.bins), **arrays)
    with pytest.raises(BundleError, match="do not fit together"):
        PointEncoder(read_bundle(copy, warn_untrained=False), device="cpu")
    target.unlink()
    with pytest.raises(BundleError, match="missing upright.npz"):
        read_bundle(copy, warn_untrained=False)


def test_a_scorer_named_outside_the_bundle_is_refused(tmp_path, tiny_bundle):
    import json

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps(meta | {"upright": "../upright.npz"}))
    with pytest.raises(BundleError, match="outside the bundle folder"):
        read_bundle(copy, warn_untrained=False)


def test_training_sees_each_sample_as_a_file_in_any_convention_reads_after_the_scorer(scorer):
    """Augment(upright=): a sample drawn z-up or x-up comes back as the scorer turns it; with
    every other augmentation off, an unseen table the scorer reads right is left as it was."""
    from training.augment import Augment

    plain = Augment(rotate=False, scale=(1, 1), jitter_sigma=0, max_dropout=0, rgb_dropout=0)
    augment = Augment(rotate=False, scale=(1, 1), jitter_sigma=0, max_dropout=0, rgb_dropout=0, upright=scorer)
    cloud = _cloud(_standing(106), 106)
    for seed in range(6):
        assert np.allclose(augment(cloud, np.random.default_rng(seed)), cloud, atol=1e-5)
        assert np.allclose(plain(cloud, np.random.default_rng(seed)), cloud)


def test_a_share_of_samples_keeps_its_stated_frame():
    """Augment(known_frame=): that share of the samples stays as it stands, as a .glb is read;
    the rest go through the scorer (a stand-in here that marks what it turns by a shift)."""
    from training.augment import Augment

    class Marking:
        def turn(self, points):
            return points + 10

    still = dict(rotate=False, scale=(1, 1), jitter_sigma=0, max_dropout=0, rgb_dropout=0, upright=Marking())
    cloud = _cloud(_standing(106), 106)

    def kept(share):
        out = [Augment(**still, known_frame=share)(cloud, np.random.default_rng(seed)) for seed in range(40)]
        assert all(np.allclose(o, cloud) or o.min() > 5 for o in out)
        return sum(np.allclose(o, cloud) for o in out)

    assert (kept(0.0), kept(1.0)) == (0, 40)
    assert 10 <= kept(0.5) <= 30


def test_the_training_settings_refuse_both_answers_to_the_up_axis():
    from training.trainer import TrainConfig

    with pytest.raises(ValueError, match="random_up and upright"):
        TrainConfig(random_up=True, upright="up.npz")
    with pytest.raises(ValueError, match="known_frame 0.5: .* give the scorer too"):
        TrainConfig(known_frame=0.5)
    with pytest.raises(ValueError, match="known_frame 2"):
        TrainConfig(known_frame=2, upright="up.npz")
