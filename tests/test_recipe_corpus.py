"""The multi-source corpus recipe (training/recipes/corpus.py) and the model recipe over it
(training/recipes/corpus_model.py) on two small sources made here: trimesh primitives
standing in for packages' objects, with one byte-identical copy, one near-identical copy,
one object whose reader fails, and labels for a split. Models are pointbert-tiny with
random initialisation, trained for an epoch: these tests check mechanics, not accuracy."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import trimesh

from core.meshio import load_points
from core.triplets import TripletStore
from training.recipes import corpus, corpus_model
from training.recipes.sources import SourceError, SourceObject

pytestmark = pytest.mark.train  # the training recipe's stages: corpus, pack, runs


def _box(extents, colour):
    mesh = trimesh.creation.box(extents=extents)
    mesh.visual.face_colors = colour
    return mesh


def _objects(root, source="toy"):
    if source == "toy2":
        for i in range(6):
            yield SourceObject(source="toy2", id=f"cone-{i}", name="cone", label="cone", texts=["a cone"], files=[],
                               load=lambda i=i: [trimesh.creation.cone(radius=0.3, height=2 + 0.5 * i)])
            yield SourceObject(source="toy2", id=f"ball-{i}", name="ball", label="ball", texts=["a ball"], files=[],
                               load=lambda i=i: [trimesh.creation.icosphere(1).apply_scale((1.3, 1 + 0.2 * i, 1))])
        return
    shapes = {
        "crate-1": ("box", lambda: [_box((1, 1, 1), (200, 30, 30, 255))]),
        "crate-2": ("box", lambda: [_box((1, 2, 1), (30, 200, 30, 255))]),
        "crate-2-copy": ("box", lambda: [_box((1, 2, 1), (30, 200, 30, 255))]),  # the same bytes
        "ball-1": ("ball", lambda: [trimesh.creation.icosphere(subdivisions=2)]),
        # the same geometry a hair off: near-identical, not byte-identical
        "ball-1-moved": ("ball", lambda: [trimesh.creation.icosphere(subdivisions=2).apply_scale(1.001)]),
        "ball-2": ("ball", lambda: [trimesh.creation.icosphere(subdivisions=3).apply_scale((1, 0.5, 1))]),
        "rod-1": (None, lambda: [trimesh.creation.cylinder(radius=0.05, height=2.0)]),
        "broken": ("box", _broken),
    }
    for i in range(6):
        shapes[f"box-{i}"] = ("box", lambda i=i: [_box((1 + i, 1, 0.5), (10 * i, 100, 100, 255))])
        shapes[f"cone-{i}"] = ("cone", lambda i=i: [trimesh.creation.cone(radius=0.5, height=1 + 0.4 * i)])
    for name, (label, load) in shapes.items():
        yield SourceObject(source="toy", id=name, name=name.replace("-", " "), label=label,
                           texts=[f"a {name.split('-')[0]}"], files=[f"{name}.bin"], load=load)


def _broken():
    raise SourceError("broken.bin: truncated mesh (12 bytes, the header says 40)")


def _toy_sources(patch: pytest.MonkeyPatch) -> dict:
    """The corpus's sources replaced by the two toy ones while `patch` holds."""
    modules = {name: types.SimpleNamespace(NAME=name, PACKAGES=(), objects=lambda root, name=name: _objects(root, name))
               for name in ("toy", "toy2")}
    patch.setattr(corpus, "SOURCES", {name: name for name in modules})
    patch.setattr(corpus, "source_module", lambda name: modules[name])
    return modules


@pytest.fixture
def toy(monkeypatch):
    return _toy_sources(monkeypatch)


def test_build_converts_samples_and_records_every_object(tmp_path, toy):
    counts = corpus.build(tmp_path, ["toy"], workers=2)
    assert counts == {"toy": {"converted": 18, "byte_identical": 1, "failed": 1}}
    lines = corpus.read_lines(tmp_path)
    assert len(lines) == 20
    assert lines["toy/broken"]["error"] == "broken.bin: truncated mesh (12 bytes, the header says 40)"
    assert lines["toy/crate-2-copy"]["same_as"] == "toy/crate-2"
    store = TripletStore(tmp_path / "store")
    assert len([s for s in store.state().values() if s["event"] != "failed"]) == 18
    entry = lines["toy/rod-1"]
    record = store.record(entry["key"])
    assert record.captions == ["a rod"]
    # The stored points are what `ulip2 index` samples from the written .glb.
    glb = tmp_path / entry["glb"]
    assert glb.suffix == ".glb" and glb.is_file()
    np.testing.assert_allclose(record.points()[:, :6], load_points(glb, corpus.STORE_POINTS, seed=0)[:, :6],
                               atol=2e-3)
    # The rod stands along y, as the glTF frame has it and trimesh's cylinder is made (z):
    # the .glb keeps the frame the source gave, so its long axis is the one it was built on.
    extent = np.ptp(record.points()[:, :3].astype(np.float32), axis=0)
    assert extent.argmax() == 2


def test_a_rerun_skips_what_is_done_and_a_partial_line_is_ignored(tmp_path, toy):
    corpus.build(tmp_path, ["toy"], workers=1)
    with open(tmp_path / "corpus.jsonl", "a") as fh:
        fh.write('{"object": "toy/ha')  # a kill mid-write
    assert corpus.build(tmp_path, ["toy"], workers=1) == {"toy": {}}
    assert len(corpus.read_lines(tmp_path)) == 20


def test_dedupe_split_and_summary(tmp_path, toy):
    corpus.build(tmp_path, ["toy"], workers=2)
    near = corpus.dedupe(tmp_path)
    assert near == {"toy/ball-1-moved": "toy/ball-1"}
    parts = corpus.split(tmp_path)
    distinct = corpus.distinct(corpus.read_lines(tmp_path), near)
    assert set(parts) == {e["object"] for e in distinct}
    labels = {e["object"]: e["label"] for e in distinct}
    for label in ("box", "cone"):  # every labelled class sends items to test; rods (no label) train
        assert any(parts[k] == "test" for k, v in labels.items() if v == label)
    assert parts["toy/rod-1"] == "train"
    assert json.loads((tmp_path / "split.json").read_text()) == parts
    row = corpus.summary(tmp_path)["sources"]["toy"]
    assert (row["found"], row["failed"], row["byte_identical"], row["near_identical"]) == (20, 1, 1, 1)
    assert row["distinct"] == 17 and row["labelled"] == 16 and row["classes"] == 3
    assert row["test"] == sum(p == "test" for p in parts.values())


def test_split_before_dedupe_names_the_stage_to_run(tmp_path, toy, capsys):
    assert corpus.main(["split", "--out", str(tmp_path)]) == 1
    assert "run the dedupe stage first: python -m training.recipes.corpus dedupe" in capsys.readouterr().err


def test_an_unknown_source_is_refused_with_the_list():
    with pytest.raises(Exception, match="unknown source 'nope'; the corpus's sources: sweethome3d, 0ad"):
        corpus.source_module("nope")


@pytest.fixture(scope="module")
def toy_pack(tmp_path_factory):
    """The pack of both toy sources, built once for the module in a folder of its own (the
    corpus beside it): tests read it and write elsewhere."""
    folder = tmp_path_factory.mktemp("toy-corpus")
    with pytest.MonkeyPatch.context() as patch:
        _toy_sources(patch)
        corpus.build(folder, ["toy", "toy2"], workers=2)
        corpus.dedupe(folder)
        corpus.split(folder)
        return corpus_model.write_pack(folder, folder / "pack.npz")


def test_the_pack_holds_every_distinct_object_as_the_index_samples_it(toy_pack, tmp_path):
    pack = corpus_model.Pack(toy_pack)
    folder = toy_pack.parent
    parts = json.loads((folder / "split.json").read_text())
    assert {o["object"]: o["split"] for o in pack.objects} == parts
    assert pack.meta["labels"] == {"toy": ["ball", "box", "cone"], "toy2": ["ball", "cone"]}
    lines = corpus.read_lines(folder)
    i = next(k for k, o in enumerate(pack.objects) if o["object"] == "toy/rod-1")
    expected = load_points(folder / lines["toy/rod-1"]["glb"], corpus_model.POINTS, seed=0)[:, :6]
    assert np.abs(pack.points([i])[0] - expected).max() <= 0.5 / 127 + 1e-6  # int8 / uint8 rounding
    features = pack.features(np.array([i]))
    assert features.texts_of(0).shape == (1, 384)
    wide = corpus_model.Pack(corpus_model.write_pack(folder, tmp_path / "wide.npz", points=2048))
    assert wide.features(np.array([i])).points.shape == (1, 2048, 6), "training draws from every point"
    assert wide.points([i]).shape == (1, corpus_model.POINTS, 6), "evaluation sees a cloud as the product samples it"
    assert pack.class_vectors(["cone"]).shape == (1, 384)


def test_train_leaves_the_held_out_source_and_the_test_objects_out(tmp_path, toy_pack):
    job = {"encoder": "pointbert-tiny", "epochs": 1, "lr": 1e-3, "batch_size": 8}
    pack = corpus_model.Pack(toy_pack)
    result = corpus_model.train(toy_pack, job, tmp_path / "run", holdout="toy2", device="cpu", show_progress=False)
    assert result["train_objects"] == len(pack.select(splits=("train", "val"), exclude_source="toy2"))
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
    trained = pack.features(pack.select(splits=("train", "val")))
    assert not {o["object"] for o in pack.objects if o["split"] == "test"} & set(trained.ids)


def test_train_on_one_source_alone(tmp_path, toy_pack):
    """--only: a diagnosis run on one source's train objects, refused by name for a source
    the pack does not hold."""
    job = {"encoder": "pointbert-tiny", "epochs": 1, "lr": 1e-3, "batch_size": 8}
    pack = corpus_model.Pack(toy_pack)
    result = corpus_model.train(toy_pack, job, tmp_path / "run", only="toy2", device="cpu", show_progress=False)
    assert result["train_objects"] == len(pack.select(splits=("train", "val"), sources={"toy2"})) > 0
    assert result["train_objects"] < len(pack.select(splits=("train", "val")))
    fixed = corpus_model.train(toy_pack, {**job, "random_up": False}, tmp_path / "fixed", only="toy2", device="cpu",
                               show_progress=False)
    import torch

    trained = torch.load(tmp_path / "fixed" / "last.pt", weights_only=True)["config"]
    assert (fixed["random_up"], trained["random_up"]) == (False, False), "--no-random-up reaches the trainer"
    with pytest.raises(corpus_model.Ulip2Error, match="--only chairs: no such source"):
        corpus_model.train(toy_pack, job, tmp_path / "other", only="chairs", device="cpu", show_progress=False)


def test_balance_repeats_the_smaller_sources_by_the_square_root_of_the_size_ratio(toy_pack):
    pack = corpus_model.Pack(toy_pack)
    big = pack.select(splits=("train", "val"), sources={"toy"})
    index = np.concatenate([big, pack.select(splits=("train", "val"), sources={"toy2"})[:2]])
    sizes = {"toy": len(big), "toy2": 2}
    big, small = "toy", "toy2"
    out = corpus_model.balanced(pack, index)
    repeat = min(corpus_model.MAX_REPEATS, max(1, round((sizes[big] / sizes[small]) ** 0.5)))
    assert repeat > 1, "toy2 cut to 2 objects is small enough to be repeated"
    counts = {s: sum(pack.objects[i]["source"] == s for i in out) for s in sizes}
    assert counts == {big: sizes[big], small: repeat * sizes[small]}
    assert set(out) == set(index), "no object added, none dropped"


def test_repeat_sets_a_source_count_by_hand_and_refuses_an_unknown_source(toy_pack):
    pack = corpus_model.Pack(toy_pack)
    index = pack.select(splits=("train", "val"))
    sizes = {s: sum(pack.objects[i]["source"] == s for i in index) for s in ("toy", "toy2")}

    def counts(out):
        return {s: sum(pack.objects[i]["source"] == s for i in out) for s in sizes}

    assert counts(corpus_model.balanced(pack, index, {"toy2": 3}, equal=True)) == {"toy": sizes["toy"],
                                                                                  "toy2": 3 * sizes["toy2"]}
    assert counts(corpus_model.balanced(pack, index, {"toy": 2}))["toy"] == 2 * sizes["toy"], "overrides --balance"
    with pytest.raises(corpus_model.Ulip2Error, match="--repeat chairs: no such source"):
        corpus_model.balanced(pack, index, {"chairs": 2})
    for bad in ("toy2", "toy2=0", "=3", "toy2=two"):
        with pytest.raises(SystemExit):
            corpus_model.main(["train", "--pack", str(toy_pack), "--out", "unused", "--repeat", bad])


def test_init_starts_from_given_weights(tmp_path, toy_pack):
    """--init: a run at a learning rate too small to move (pointbert-tiny, random start)
    ends where its init was, where one without it ends elsewhere."""
    from safetensors.numpy import load_file

    job = {"encoder": "pointbert-tiny", "epochs": 1, "lr": 1e-3, "batch_size": 8, "random_up": False}
    corpus_model.train(toy_pack, job, tmp_path / "first", device="cpu", show_progress=False)
    still = {**job, "lr": 1e-9, "seed": 1}
    corpus_model.train(toy_pack, {**still, "init": tmp_path / "first" / "encoder.safetensors"}, tmp_path / "tuned",
                       device="cpu", show_progress=False)
    corpus_model.train(toy_pack, still, tmp_path / "fresh", device="cpu", show_progress=False)
    first, tuned, fresh = (load_file(tmp_path / run / "encoder.safetensors") for run in ("first", "tuned", "fresh"))

    def gap(a, b):  # over learnt weights: batch-norm statistics follow the batches at any rate
        return max(float(np.abs(a[k] - b[k]).max()) for k in a if a[k].dtype.kind == "f" and "running" not in k)

    assert gap(first, tuned) < 1e-3 < gap(first, fresh)


def test_evaluate_reports_held_out_frames_and_leave_one_source_out(tmp_path, toy_pack, capsys):
    """Two tiny runs, one a source left out, then the evaluation table and JSON beside the
    shipped default and one run's own bundle, each scored on the left-out sources' objects;
    the majority-class figure is checked by hand."""
    job = {"encoder": "pointbert-tiny", "epochs": 1, "lr": 1e-3, "batch_size": 8}
    for source in ("toy", "toy2"):
        corpus_model.train(toy_pack, job, tmp_path / "loso" / source, holdout=source, device="cpu", show_progress=False)
        corpus_model.export(tmp_path / "loso" / source / "encoder.safetensors", tmp_path / "loso" / source / "bundle",
                            job, "test", prompts=False)
        corpus_model.score_left_out(corpus_model.Pack(toy_pack), source, tmp_path / "loso" / source / "bundle", job)
    from core.bundle import SHIPPED_BUNDLE

    report = corpus_model.evaluate(toy_pack, [SHIPPED_BUNDLE, tmp_path / "loso" / "toy2" / "bundle"], tmp_path / "loso")
    scores = report["bundles"][str(SHIPPED_BUNDLE)]
    assert set(scores["frames"]) == {"y-up", "z-up", "x-up"}
    assert set(scores["held_out"]) <= {"toy", "toy2"} and scores["held_out"]
    loso = report["leave_one_source_out"]
    assert set(loso) == {"toy", "toy2"}
    pack = corpus_model.Pack(toy_pack)
    toy2 = [o["label"] for o in pack.objects if o["source"] == "toy2"]
    assert loso["toy2"]["n"] == len(toy2) >= 10
    assert loso["toy2"]["majority_top1"] == round(max(toy2.count("cone"), toy2.count("ball")) / len(toy2), 4)
    assert loso["toy2"]["d2_references"] > 0 and 0 <= loso["toy2"]["d2_top1"] <= 1
    assert set(scores["left_out_sources"]) == {"toy", "toy2"}, "the bundle is set beside the runs, source by source"
    toy2_run = report["bundles"][str(tmp_path / "loso" / "toy2" / "bundle")]["left_out_sources"]
    assert toy2_run["toy2"] == loso["toy2"]["top1"], "the same objects, read the same way, as the run scored"
    corpus_model.print_report(report)
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1]) == report
    mean_row = next(line for line in out if line.strip().startswith("mean"))
    assert f"{scores['left_out_sources_mean_top1']:.3f}" in mean_row


def test_upright_fits_on_train_objects_and_goes_into_a_bundle(tmp_path, toy_pack, tiny_bundle):
    """The scorer is fitted on the train and val objects, scored on the test ones, and
    carried by a bundle named with --add-to (a copy of pointbert-tiny, random weights)."""
    import shutil

    from core.bundle import read_bundle
    from core.upright import Upright

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, bundle)
    result = corpus_model.upright(toy_pack, tmp_path / "up.npz", [bundle])
    pack = corpus_model.Pack(toy_pack)
    assert result["test_objects"] == len(pack.select(splits=("test",))) > 0
    assert set(result["by_source"]) <= {"toy", "toy2"} and 0 <= result["test_accuracy"] <= 1
    assert read_bundle(bundle, warn_untrained=False).upright == "upright.npz"
    assert Upright.load(bundle / "upright.npz").bins == Upright.load(tmp_path / "up.npz").bins


def test_validate_with_the_scorer_scores_every_frame_and_resumes(tmp_path, toy_pack):
    """train --validate --upright --known-frame (pointbert-tiny, random start): val top-1 y-up
    (frame known), z-up and x-up (through the scorer) every 5 epochs into val.jsonl, and a
    longer rerun goes on from the checkpoint with the earlier points kept."""
    import torch

    from training.upright import fit_upright

    pack = corpus_model.Pack(toy_pack)
    fit_upright(pack.points(pack.select(splits=("train",))), hidden=16, steps=50).save(tmp_path / "up.npz")
    job = {"encoder": "pointbert-tiny", "epochs": 5, "lr": 1e-3, "batch_size": 8, "random_up": False,
           "upright": tmp_path / "up.npz", "known_frame": 0.5}
    first = corpus_model.train(toy_pack, job, tmp_path / "run", validate=True, device="cpu", show_progress=False)
    assert [p["epoch"] for p in first["curve"]] == [5]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]["known_frame"] == 0.5
    assert {"val_top1_mean", "val_top1_z_up_mean", "val_top1_x_up_mean"} <= set(first["curve"][0])
    longer = corpus_model.train(toy_pack, {**job, "epochs": 10}, tmp_path / "run", validate=True, device="cpu",
                                show_progress=False)
    assert [p["epoch"] for p in longer["curve"]] == [5, 10] and longer["curve"][0] == first["curve"][0]


def test_loso_with_the_scorer_gives_each_run_its_own(tmp_path, toy_pack):
    """loso --upright: each run trains on the frames of the scorer in its own folder (fitted
    there without the source it leaves out, unless a scorer is there already, as here: small
    ones fitted in a second on each run's sources) and its bundle carries it."""
    import torch

    from core.bundle import read_bundle
    from training.upright import fit_upright

    pack = corpus_model.Pack(toy_pack)
    for source in ("toy", "toy2"):
        (tmp_path / "loso" / source).mkdir(parents=True)
        clouds = pack.points(pack.select(splits=("train", "val"), exclude_source=source))
        fit_upright(clouds, hidden=8, steps=20).save(tmp_path / "loso" / source / "upright.npz")
    assert corpus_model.main(["loso", "--pack", str(toy_pack), "--out", str(tmp_path / "loso"), "--encoder",
                              "pointbert-tiny", "--epochs", "1", "--batch-size", "8", "--upright",
                              "--no-random-up", "--device", "cpu"]) == 0
    for source in ("toy", "toy2"):
        run = tmp_path / "loso" / source
        assert torch.load(run / "last.pt", weights_only=True)["config"]["upright"] == str(run / "upright.npz")
        assert read_bundle(run / "bundle", warn_untrained=False).upright == "upright.npz"
        assert json.loads((run / corpus_model.LEFT_OUT).read_text())["job"]["upright"] == str(run / "upright.npz")


def test_loso_second_stage_starts_each_run_from_its_first_stage(tmp_path, toy_pack, capsys):
    """loso --init-runs (pointbert-tiny, 1 epoch a stage): each second-stage run starts from
    the first-stage run that left out the same source, a --repeat of the left-out source is
    dropped, and a missing first-stage run is named."""
    import torch

    tiny = ["--pack", str(toy_pack), "--encoder", "pointbert-tiny", "--epochs", "1", "--batch-size", "8",
            "--no-random-up", "--device", "cpu"]
    assert corpus_model.main(["loso", *tiny, "--out", str(tmp_path / "first")]) == 0
    assert corpus_model.main(["loso", *tiny, "--out", str(tmp_path / "second"), "--init-runs", str(tmp_path / "first"),
                              "--repeat", "toy2=2", "--lr", "1e-4"]) == 0
    for source in ("toy", "toy2"):
        config = torch.load(tmp_path / "second" / source / "last.pt", weights_only=True)["config"]
        assert config["init"] == str(tmp_path / "first" / source / "encoder.safetensors")
    assert json.loads((tmp_path / "second" / "toy" / corpus_model.LEFT_OUT).read_text())["job"]["repeat"] == {"toy2": 2}
    capsys.readouterr()
    assert corpus_model.main(["loso", *tiny, "--out", str(tmp_path / "third"), "--init-runs",
                              str(tmp_path / "none")]) == 1
    assert "none/toy/encoder.safetensors: missing; run the first stage's loso" in capsys.readouterr().err


def test_a_rerun_of_loso_skips_the_sources_it_has_scored_and_evaluate_reads_their_scores(tmp_path, toy_pack):
    """A source whose run wrote left_out.json is done: the rerun trains only the other
    (pointbert-tiny, 1 epoch), and evaluate takes the written scores, refusing a broken file
    by name."""
    runs = tmp_path / "loso"
    (runs / "toy").mkdir(parents=True)
    written = {"n": 7, "classes": 2, "top1": 0.5, "d2_top1": 0.25, "d2_references": 3, "majority_top1": 0.6, "job": {}}
    (runs / "toy" / corpus_model.LEFT_OUT).write_text(json.dumps(written))
    assert corpus_model.main(["loso", "--pack", str(toy_pack), "--out", str(runs), "--encoder", "pointbert-tiny",
                              "--epochs", "1", "--batch-size", "8", "--device", "cpu"]) == 0
    assert not (runs / "toy" / "last.pt").exists(), "a scored source is not trained again"
    assert (runs / "toy2" / "last.pt").is_file() and (runs / "toy2" / corpus_model.LEFT_OUT).is_file()
    loso = corpus_model.leave_one_source_out(corpus_model.Pack(toy_pack), runs)
    assert loso["toy"] == {k: v for k, v in written.items() if k != "job"}
    assert loso["toy2"]["n"] == sum(o["source"] == "toy2" and bool(o["label"])
                                    for o in corpus_model.Pack(toy_pack).objects)
    (runs / "toy" / corpus_model.LEFT_OUT).write_text("{not json")
    with pytest.raises(corpus_model.Ulip2Error, match="toy/left_out.json"):
        corpus_model.leave_one_source_out(corpus_model.Pack(toy_pack), runs)


def test_loso_left_out_trains_only_the_named_sources_and_refuses_an_unknown_one(tmp_path, toy_pack, capsys):
    """loso --left-out toy2 (pointbert-tiny, 1 epoch) trains and scores that source alone, so
    the runs can be shared among machines; a source the pack lacks is named with those it holds."""
    tiny = ["--pack", str(toy_pack), "--encoder", "pointbert-tiny", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--out", str(tmp_path / "loso")]
    assert corpus_model.main(["loso", *tiny, "--left-out", "toy2"]) == 0
    assert (tmp_path / "loso" / "toy2" / corpus_model.LEFT_OUT).is_file()
    assert not (tmp_path / "loso" / "toy").exists()
    capsys.readouterr()
    assert corpus_model.main(["loso", *tiny, "--left-out", "toy3"]) == 1
    assert "--left-out toy3: not a source" in capsys.readouterr().err


@pytest.mark.blender
def test_render_stage_captions_each_object_from_its_views_and_the_pack_takes_the_sentences(tmp_path, toy):
    """Blender renders one small view of each toy object; the metadata captioner names the
    red crate red, calls it by its source's name and claims no size (game units); the pack
    adds the sentences to the object's texts, and a rerun renders nothing again."""
    corpus.build(tmp_path, ["toy"], workers=2)
    corpus.dedupe(tmp_path)
    corpus.split(tmp_path)
    objects = corpus.split_objects(tmp_path)
    result = corpus.render(tmp_path, views=1, resolution=32, workers=1, show_progress=False)
    assert result == {"rendered": len(objects), "already": 0, "failed": 0, "captioned": len(objects)}
    texts = corpus.render_texts(tmp_path)
    crate = next(e for e in objects if e["object"] == "toy/crate-1")
    assert any("red" in t and "crate" in t for t in texts[crate["key"]]), texts[crate["key"]]
    assert not any(" m tall" in t for sentences in texts.values() for t in sentences)

    pack = corpus_model.Pack(corpus_model.write_pack(tmp_path, tmp_path / "pack.npz"))
    assert pack.meta["render_texts"] == len(objects)
    i = next(k for k, o in enumerate(pack.objects) if o["object"] == "toy/crate-1")
    vectors = pack.features(np.array([i])).texts_of(0)
    assert len(vectors) == len(["a crate"] + texts[crate["key"]])
    assert corpus.render(tmp_path, views=1, resolution=32, workers=1, show_progress=False)["rendered"] == 0


def test_train_with_a_scorer_prints_its_result_as_json(tmp_path, toy_pack, capsys):
    """The train stage's last line is its result, the scorer's path included (pointbert-tiny,
    one epoch; a 40-epoch run once ended on a path JSON could not write)."""
    from training.upright import fit_upright

    pack = corpus_model.Pack(toy_pack)
    fit_upright(pack.points(pack.select(splits=("train",))), hidden=8, steps=20).save(tmp_path / "up.npz")
    assert corpus_model.main(["train", "--pack", str(toy_pack), "--out", str(tmp_path / "run"), "--encoder",
                              "pointbert-tiny", "--epochs", "1", "--batch-size", "8", "--no-random-up",
                              "--upright", str(tmp_path / "up.npz"), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["upright"] == str(tmp_path / "up.npz") and result["weights"] == str(tmp_path / "run" / "encoder.safetensors")
