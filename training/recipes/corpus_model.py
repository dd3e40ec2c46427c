"""The default model from the multi-source corpus (training/recipes/corpus.py), and the
evaluation that says whether it generalises.

    python -m training.recipes.corpus_model pack     --corpus DIR --out PACK.npz
    python -m training.recipes.corpus_model train    --pack PACK.npz --out RUN [--holdout SOURCE]
    python -m training.recipes.corpus_model loso     --pack PACK.npz --out RUNS [--left-out SOURCE]
    python -m training.recipes.corpus_model evaluate --pack PACK.npz --bundle B [--bundle B2] [--loso RUNS]
    python -m training.recipes.corpus_model upright  --pack PACK.npz --out UPRIGHT.npz [--add-to BUNDLE]
    python -m training.recipes.corpus_model ship     --weights RUN/encoder.safetensors --bundle OUT [--upright UPRIGHT.npz]

pack      one .npz (and a .json beside it) with what training and evaluation read, so
          both can move to a GPU machine the corpus (gigabytes) cannot reach: for every
          distinct object its 1,024 points sampled from its .glb as `ulip2 index` samples
          them (xyz as int8 / 127, rgb as uint8 / 255: 6 bytes a point), the minilm vectors
          of its texts (one table of distinct texts, float16), and in the .json its key,
          source, label and split (train / val / test), each source's label set and the
          prompt-ensemble vectors of every label
train     the encoder on the train objects (with --validate: train minus val, scored on
          val every 5 epochs), with every source or all but --holdout; random up axis on
          (each sample's up turned onto any of the 6 axis directions). Resumes from RUN.
          --balance / --repeat weigh the sources; --init fine-tunes given weights
loso      one `train` a source left out, for each source with two labels or more, then
          that source's scores (b, below) into RUNS/SOURCE/left_out.json; a source with
          them is done, so a rerun goes on with the next; --left-out SOURCE runs only that
          one (to share the runs among machines or days)
evaluate  for each bundle, in one run: (a) top-1/top-5 on each source's held-out test
          objects over that source's label set; (b) leave-one-source-out top-1 of the
          --loso runs on each left-out source's labelled objects, beside D2 nearest
          neighbour (references: the other sources' labelled objects of the same labels)
          and the majority class, and each --bundle on the same objects (a bundle trained on
          a source has seen some of them); all as the corpus's .glb files are read, their frame
          known (glTF states y up; a bundle's up-axis scorer is not asked); (c) top-1 on all
          test objects as files that do not say which axis is up (OBJ, STL, PLY) read
          when saved y-up, z-up and x-up, through the scorer. A table, then one JSON line
upright   the up-axis scorer (core/upright.py) fitted on the train and val objects, and its
          accuracy on the test objects; --add-to puts it in bundles (to score them with it)
ship      the bundle (with the shipped vocabularies' prompt ensembles, and --upright's scorer)

Test objects never reach training; validation objects are used for selection only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.errors import Ulip2Error
from core.export import add_upright
from core.progress import bar
from core.upright import TURNS, UPRIGHT_FILE, Upright

SPACE = "minilm"
POINTS = 1024
VAL_CURVE = "val.jsonl"  # train --validate: one line per scoring, in the run folder
# loso: a left-out source's scores, written in its run folder when its run is over. It is
# all `evaluate --loso` reads, so a few hundred bytes a source carry the leave-one-out
# figures from machine to machine (and mark the source done) where the runs cannot.
LEFT_OUT = "left_out.json"
CHOSEN = {"encoder": "pointbert-lite", "epochs": 40, "lr": 1e-3, "batch_size": 64}
# A y-up cloud as a y-up reader sees the file when it was saved with another axis up (the
# object's up lands on +z, on +x): the inverses of the turns the up-axis scorer makes back.
FRAMES = {name: turn.T for name, turn in zip(("y-up", "z-up", "x-up"), TURNS)}


# ---- pack ------------------------------------------------------------------------------

def write_pack(corpus_dir: Path, out: Path, points: int = POINTS) -> Path:
    """The pack of the corpus at `corpus_dir` (after its split stage), `points` a cloud:
    more than the encoder takes lets training draw a fresh subset every epoch, as ULIP-2
    does from its 10k clouds, at 6 bytes a point in the pack."""
    from tqdm import tqdm

    from core.spaces.vocabularies import prompt_name
    from core.meshio import load_points
    from core.spaces import load_space

    from .corpus import _read_json, render_texts, split_objects

    parts = _read_json(corpus_dir / "split.json", "split")
    objects = split_objects(corpus_dir)
    rendered = render_texts(corpus_dir)
    for e in objects:  # the source's sentences, then the render stage's (when it ran)
        e["texts"] = list(dict.fromkeys((e["texts"] or [f"a {e['name']}"]) + rendered.get(e["key"], [])))
    xyz = np.zeros((len(objects), points, 3), np.int8)
    rgb = np.zeros((len(objects), points, 3), np.uint8)
    for i, entry in enumerate(tqdm(objects, desc="pack: sample", unit="object", file=sys.stderr, dynamic_ncols=True)):
        cloud = load_points(corpus_dir / entry["glb"], points, seed=0)
        xyz[i] = np.round(np.clip(cloud[:, :3], -1, 1) * 127)
        rgb[i] = np.round(np.clip(cloud[:, 3:6], 0, 1) * 255)
    space = load_space(SPACE)
    texts = sorted({t for e in objects for t in e["texts"]})
    index = {t: i for i, t in enumerate(texts)}
    labels = {}
    for e in objects:
        if e.get("label"):
            labels.setdefault(e["source"], set()).add(e["label"])
    classnames = sorted({c for names in labels.values() for c in names})
    text_ids = [[index[t] for t in e["texts"]] for e in objects]
    offsets = np.zeros(len(objects) + 1, np.int64)
    offsets[1:] = np.cumsum([len(t) for t in text_ids])
    arrays = {"xyz": xyz, "rgb": rgb, "text_table": space.embed_text(texts).astype(np.float16),
              "text_ids": np.concatenate(text_ids).astype(np.int32), "text_offsets": offsets,
              "class_vectors": space.embed_prompts([prompt_name(c) for c in classnames]).astype(np.float32)}
    meta = {"space": SPACE, "points": points, "classnames": classnames,
            "render_texts": sum(e["key"] in rendered for e in objects),  # objects with the render stage's sentences
            "labels": {s: sorted(v) for s, v in sorted(labels.items())},
            "objects": [{"object": e["object"], "source": e["source"], "label": e.get("label"),
                         "split": parts[e["object"]], "name": e["name"]} for e in objects]}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".tmp.npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False))
    out.with_suffix(".tmp.npz").replace(out)
    return out


class Pack:
    """A pack as training and evaluation read it. `labels` holds the sources that zero-shot
    scores mean something on: two classes at least (Trigger Rally's cars are one)."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as data:
                self.arrays = dict(data)
            self.meta = json.loads(Path(path).with_suffix(".json").read_text())
        except (OSError, ValueError) as exc:
            raise Ulip2Error(f"{path}: not a readable pack ({exc}); write one with: "
                             "python -m training.recipes.corpus_model pack --corpus DIR --out PACK.npz") from None
        self.objects = self.meta["objects"]
        self.classnames = self.meta["classnames"]
        self.labels = {s: names for s, names in self.meta["labels"].items() if len(names) >= 2}

    def points(self, index, count: int | None = POINTS) -> np.ndarray:
        """(n, count, 6) float32 of the objects at `index`: the first `count` of each cloud
        (a random sample, as the product samples a file; None: all the pack holds)."""
        xyz = self.arrays["xyz"][index, :count].astype(np.float32) / 127
        return np.concatenate([xyz, self.arrays["rgb"][index, :count].astype(np.float32) / 255], axis=-1)

    def select(self, *, splits=(), sources=None, exclude_source=None, labelled=False) -> np.ndarray:
        return np.array([i for i, o in enumerate(self.objects)
                         if (not splits or o["split"] in splits)
                         and (sources is None or o["source"] in sources)
                         and o["source"] != exclude_source and (o["label"] or not labelled)], dtype=np.int64)

    def features(self, index: np.ndarray):
        """TripletFeatures of the objects at `index` (their points and text vectors)."""
        from ..features import TripletFeatures

        table, ids, off = self.arrays["text_table"], self.arrays["text_ids"], self.arrays["text_offsets"]
        return TripletFeatures.from_lists(self.meta["space"], [self.objects[i]["object"] for i in index],
                                          self.points(index, None), [table[ids[off[i]:off[i + 1]]] for i in index])

    def class_vectors(self, names: list[str]) -> np.ndarray:
        position = {c: i for i, c in enumerate(self.classnames)}
        return self.arrays["class_vectors"][[position[c] for c in names]]


# ---- train -----------------------------------------------------------------------------

def train(pack_path: Path, job: dict, out: Path, *, holdout: str | None = None, only: str | None = None,
          validate: bool = False, device: str = "auto", show_progress: bool = True) -> dict:
    """Train one configuration on the pack's train objects (less `holdout`'s, or `only`'s
    alone: a diagnosis of what one source can teach this encoder; with `validate`, less the
    val objects too, scored on them every 5 epochs into out/val.jsonl). Resumes from out."""
    from .selection import _device
    from ..trainer import Trainer, TrainConfig

    pack = Pack(pack_path)
    splits = ("train",) if validate else ("train", "val")
    sources = None if only is None else {only}
    held = sorted({o["source"] for o in pack.objects})
    if only is not None and only not in held:
        raise Ulip2Error(f"--only {only}: no such source in {pack_path} (it holds {', '.join(held)})")
    index = pack.select(splits=splits, sources=sources, exclude_source=holdout)
    repeat = {s: n for s, n in (job.get("repeat") or {}).items() if s != holdout}  # loso leaves it out too
    if job.get("balance") or repeat:
        index = balanced(pack, index, repeat, equal=not job.get("balance"))
    config = TrainConfig(encoder=job["encoder"], epochs=job["epochs"], batch_size=job["batch_size"], lr=job["lr"],
                         seed=job.get("seed", 0), random_up=job.get("random_up", True) and not job.get("upright"),
                         upright=str(job["upright"]) if job.get("upright") else None, amp=job.get("amp", True),
                         init=str(job["init"]) if job.get("init") else None,
                         known_frame=job.get("known_frame") or 0.0)
    groups = [pack.objects[i]["source"] for i in index] if job.get("source_batches") else None
    trainer = Trainer(pack.features(index), config, out, device=_device(device), groups=groups)
    start = time.perf_counter()
    result = dict(job, holdout=holdout, only=only, train_objects=len(index))
    if not validate:
        trainer.resume()
        with bar("training", "step", enabled=show_progress, status=lambda: trainer.status) as on_progress:
            history = trainer.fit(on_progress)
        return result | {"final_loss": round(history[-1]["loss"], 4) if history else None,
                         "seconds": round(time.perf_counter() - start, 1), "weights": str(out / "encoder.safetensors")}
    val = pack.select(splits=("val",), sources=sources, exclude_source=holdout, labelled=True)
    scorer = trainer.augment.upright
    frames = FRAMES if scorer is not None else {"y-up": FRAMES["y-up"]}  # the scorer is what z-up tests
    val_points = pack.points(val)
    trainer.resume()
    while trainer.epoch < config.epochs:
        metrics = trainer.train_epoch()
        trainer.save_checkpoint()
        if trainer.epoch % 5 == 0 or trainer.epoch == config.epochs:
            point = {"epoch": trainer.epoch, "loss": round(metrics["loss"], 4)}
            for frame, rotation in frames.items():
                points = turned(val_points, rotation)
                if scorer is not None and frame != "y-up":  # y-up as a .glb is read, the frame known
                    points = scorer.turn(points)
                scores = per_source_top1(_torch_embed(trainer.model, points, trainer.device), pack, val)
                key = "val_top1" if frame == "y-up" else f"val_top1_{frame.replace('-', '_')}"
                point |= {f"{key}_mean": round(float(np.mean(list(scores.values()))), 4)}
                if frame == "y-up":
                    point |= {"val_top1": {k: round(v, 4) for k, v in scores.items()}}
            with open(out / VAL_CURVE, "a") as fh:  # after the checkpoint: a line means its epoch is saved
                fh.write(json.dumps(point) + "\n")
            print(json.dumps(point), file=sys.stderr, flush=True)
            trainer.model.train()
    curve = [json.loads(line) for line in (out / VAL_CURVE).read_text().splitlines()]
    return result | {"curve": curve, "val_top1_mean": curve[-1]["val_top1_mean"],
                     "seconds": round(time.perf_counter() - start, 1)}


#: The most times `balanced` repeats a source's objects (Trigger Rally holds 3).
MAX_REPEATS = 4


def balanced(pack: Pack, index: np.ndarray, repeat: dict[str, int] | None = None, *, equal: bool = False) -> np.ndarray:
    """`index` with each source's objects repeated round(sqrt(largest / its size)) times, at
    most MAX_REPEATS: the largest source (0 A.D., 3,472 objects) no longer outnumbers
    furniture (901) four to one in every batch, and a small source is not learnt by heart.
    `repeat` sets a source's count by hand (`--repeat sweethome3d=4`); with `equal`, the
    sources it does not name are taken once."""
    sources = np.array([pack.objects[i]["source"] for i in index])
    names, sizes = np.unique(sources, return_counts=True)
    unknown = set(repeat or {}) - set(names)
    if unknown:
        raise Ulip2Error(f"--repeat {', '.join(sorted(unknown))}: no such source in training "
                         f"(it holds {', '.join(names)})")
    repeats = {n: 1 if equal else min(MAX_REPEATS, max(1, round(float(np.sqrt(sizes.max() / size)))))
               for n, size in zip(names, sizes)} | dict(repeat or {})
    return np.concatenate([np.repeat(index[sources == n], repeats[n]) for n in names])


def turned(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(B, N, C) points with xyz turned by `rotation` (one of FRAMES)."""
    out = points.copy()
    out[..., :3] = points[..., :3] @ rotation.T
    return out


def _torch_embed(model, points: np.ndarray, device) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(points[i:i + 64]).to(device)).float()
                          for i in range(0, len(points), 64)]).cpu().numpy()


# ---- evaluate --------------------------------------------------------------------------

def zero_shot(embedded: np.ndarray, pack: Pack, index: np.ndarray, labels: list[str]) -> dict:
    """Top-1/top-5 of the objects at `index` over the label set `labels`."""
    from core.spaces.ranking import zero_shot as score

    return score(embedded, [pack.objects[i]["label"] for i in index], pack.class_vectors(labels), labels)


def _by_source(pack: Pack, index: np.ndarray):
    """(source, its labels, positions in `index` of its objects) for each scored source."""
    for source, labels in pack.labels.items():
        mine = np.array([k for k, i in enumerate(index) if pack.objects[i]["source"] == source], dtype=np.int64)
        if len(mine):
            yield source, labels, mine


def per_source_top1(embedded: np.ndarray, pack: Pack, index: np.ndarray) -> dict[str, float]:
    """Top-1 per source of the objects at `index`, each over its own source's labels."""
    return {source: zero_shot(embedded[mine], pack, index[mine], labels)["top1"]
            for source, labels, mine in _by_source(pack, index)}


def open_encoder(bundle: Path):
    """A bundle's PointEncoder on the CPU, refused unless it is in the corpus's space."""
    from core.runtime import PointEncoder

    encoder = PointEncoder(bundle, device="cpu")
    if encoder.bundle.space != SPACE:
        raise Ulip2Error(f"{bundle}: in space {encoder.bundle.space!r}; the corpus is labelled in {SPACE!r}")
    return encoder


def embed(encoder, points: np.ndarray, *, frame_known: bool) -> np.ndarray:
    """The pack's points (in random order) at the encoder's point count; `frame_known` as a
    corpus .glb is read (glTF states y up), else as a file that does not say (the scorer)."""
    return encoder.embed_points(points[:, :encoder.num_points], frame_known=frame_known)


def held_out(pack: Pack, bundle: Path) -> dict:
    """(a) per source, frame known, and (c) the frame test, frame unknown, on the test objects."""
    test = pack.select(splits=("test",), labelled=True)
    points = pack.points(test)
    encoder = open_encoder(bundle)
    base = embed(encoder, points, frame_known=True)
    by_source = {}
    for source, labels, mine in _by_source(pack, test):
        r = zero_shot(base[mine], pack, test[mine], labels)
        by_source[source] = {"n": r["n"], "classes": r["classes"], "top1": round(r["top1"], 4),
                             "top5": round(r["top5"], 4)}
    frames = {}
    for frame, rotation in FRAMES.items():
        embedded = embed(encoder, turned(points, rotation), frame_known=False)
        frames[frame] = round(float(np.mean(list(per_source_top1(embedded, pack, test).values()))), 4)
    return {"held_out": by_source, "frames": frames}


def score_left_out(pack: Pack, source: str, bundle: Path, job: dict) -> dict:
    """(b) for one source: its labelled objects through `bundle`, trained without them,
    beside D2 nearest neighbour and the majority class; written into the bundle's run
    folder as LEFT_OUT (with the settings it was trained with) and returned."""
    from collections import Counter

    from .corpus import _write_json
    from .d2 import d2_descriptor

    labels = pack.labels[source]
    index = pack.select(sources={source}, labelled=True)
    points = pack.points(index)
    truth = [pack.objects[i]["label"] for i in index]
    refs = np.array([i for i in pack.select(exclude_source=source, labelled=True)
                     if pack.objects[i]["label"] in set(labels)], dtype=np.int64)
    d2 = 0.0
    if len(refs):
        ref_d = np.stack([d2_descriptor(p[:, :3]) for p in pack.points(refs)])
        ref_labels = [pack.objects[i]["label"] for i in refs]
        hits = [ref_labels[int(np.abs(ref_d - d2_descriptor(p[:, :3])).sum(1).argmin())] == t
                for p, t in zip(points, truth)]
        d2 = float(np.mean(hits))
    row = {"n": len(index), "classes": len(labels), "top1": on_left_out_sources(pack, bundle, [source])[source],
           "d2_top1": round(d2, 4), "d2_references": len(refs),
           "majority_top1": round(Counter(truth).most_common(1)[0][1] / len(truth), 4)}
    _write_json(Path(bundle).parent / LEFT_OUT, row | {"job": job})
    return row


def leave_one_source_out(pack: Pack, runs: Path) -> dict:
    """(b) the scores each finished `loso` run wrote (RUNS/SOURCE/left_out.json)."""
    result = {}
    for source in pack.labels:
        path = runs / source / LEFT_OUT
        if not path.is_file():
            continue
        try:
            row = json.loads(path.read_text())
            result[source] = {k: row[k] for k in ("n", "classes", "top1", "d2_top1", "d2_references", "majority_top1")}
        except (ValueError, KeyError, TypeError) as exc:
            raise Ulip2Error(f"{path}: not a left-out score ({exc}); delete it and rerun "
                             f"`corpus_model loso` for {source}") from None
    return result


def on_left_out_sources(pack: Pack, bundle: Path, sources: list[str]) -> dict[str, float]:
    """A bundle's top-1 on the objects (b) scores (each source's labelled objects, frame
    known): what the leave-one-out runs are set beside. A bundle trained on a source has
    seen some of them, so on that source it is no leave-one-out figure."""
    encoder = open_encoder(bundle)
    scores = {}
    for source in sources:
        index = pack.select(sources={source}, labelled=True)
        embedded = embed(encoder, pack.points(index), frame_known=True)
        scores[source] = round(zero_shot(embedded, pack, index, pack.labels[source])["top1"], 4)
    return scores


def _mean(values) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else None


def evaluate(pack_path: Path, bundles: list[Path], loso: Path | None = None) -> dict:
    pack = Pack(pack_path)
    report = {"bundles": {str(b): held_out(pack, b) for b in bundles}}
    if loso is not None:
        runs = leave_one_source_out(pack, loso)
        report["leave_one_source_out"] = runs
        report["leave_one_source_out_mean_top1"] = _mean(r["top1"] for r in runs.values())
        for b in bundles:
            scores = on_left_out_sources(pack, b, list(runs))
            report["bundles"][str(b)] |= {"left_out_sources": scores, "left_out_sources_mean_top1": _mean(scores.values())}
    return report


def print_report(report: dict) -> None:
    for k, (bundle, r) in enumerate(report["bundles"].items()):
        print(f"[{k + 1}] {bundle}")
        print(f"  {'held-out test':<16} {'n':>5} {'classes':>7} {'top-1':>6} {'top-5':>6}")
        for source, row in r["held_out"].items():
            print(f"  {source:<16} {row['n']:>5} {row['classes']:>7} {row['top1']:>6.3f} {row['top5']:>6.3f}")
        frames = ", ".join(f"{k} {v:.3f}" for k, v in r["frames"].items())
        print(f"  frames, files that do not say (mean over sources): {frames}")
    if "leave_one_source_out" in report:
        bundles = list(report["bundles"].values())
        print("left out: the loso runs' top-1, D2 nearest neighbour, the majority class, then each bundle above "
              "on the same objects")
        print(f"  {'left out':<16} {'n':>5} {'classes':>7} {'top-1':>6} {'D2':>6} {'major':>6}"
              + "".join(f" {f'[{k + 1}]':>6}" for k in range(len(bundles))))
        for source, row in report["leave_one_source_out"].items():
            print(f"  {source:<16} {row['n']:>5} {row['classes']:>7} {row['top1']:>6.3f} "
                  f"{row['d2_top1']:>6.3f} {row['majority_top1']:>6.3f}"
                  + "".join(f" {b['left_out_sources'][source]:>6.3f}" for b in bundles))
        if report["leave_one_source_out"]:
            print(f"  {'mean':<16} {'':>5} {'':>7} {report['leave_one_source_out_mean_top1']:>6.3f} {'':>6} {'':>6}"
                  + "".join(f" {b['left_out_sources_mean_top1']:>6.3f}" for b in bundles))
    print(json.dumps(report))


# ---- ship ------------------------------------------------------------------------------

def export(weights: Path, bundle: Path, job: dict, note: str, *, prompts: bool = True) -> Path:
    """The trained weights as a bundle; with `prompts`, carrying the shipped vocabularies'
    prompt ensembles (what users tag with; the leave-one-out bundles need none)."""
    from core.export import add_prompts, export_bundle

    export_bundle(bundle, config=job["encoder"], checkpoint=weights, space=SPACE, overwrite=True, source=note)
    if prompts:
        with bar("prompt ensembles", "class") as on_progress:
            add_prompts(bundle, ["lvis", "modelnet40", "shapenet55"], on_progress=on_progress)
    return bundle


def upright(pack_path: Path, out: Path, add_to: list[Path] = (), *, validate: bool = False,
            exclude_source: str | None = None) -> dict:
    """Fit the up-axis scorer on the pack's train and val objects (all stand y-up; with
    `validate`, train only; less `exclude_source`'s), write it to `out` and into each bundle
    of `add_to`; its accuracy on the test objects (with `validate`, the val ones), per source."""
    from ..upright import fit_upright, upright_accuracy

    pack = Pack(pack_path)
    with bar("up-axis scorer", "step") as on_progress:
        fit_on = pack.select(splits=("train",) if validate else ("train", "val"), exclude_source=exclude_source)
        scorer = fit_upright(pack.points(fit_on), on_progress=on_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    scorer.save(out)
    for bundle in add_to:
        add_upright(bundle, Upright.load(out))
    scored = "val" if validate else "test"
    index = pack.select(splits=(scored,))
    sources = np.array([pack.objects[i]["source"] for i in index])
    points = pack.points(index)
    return {"upright": str(out), f"{scored}_objects": len(index),
            f"{scored}_accuracy": round(upright_accuracy(scorer, points), 4),
            "by_source": {s: round(upright_accuracy(scorer, points[sources == s]), 4) for s in sorted(set(sources))}}


def _repeat(text: str) -> tuple[str, int]:
    """--repeat's SOURCE=N."""
    source, _, count = text.partition("=")
    if not source or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give SOURCE=N with N a whole number >= 1, "
                                         "e.g. sweethome3d=4")
    return source, int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.corpus_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    p = sub.add_parser("pack", help="the corpus -> one pack")
    p.add_argument("--corpus", type=Path, required=True, help="the folder training.recipes.corpus made")
    p.add_argument("--out", type=Path, required=True, help="PACK.npz to write")
    p.add_argument("--points", type=int, default=POINTS,
                   help=f"points a cloud (default {POINTS}, what the encoder takes; more lets training draw a "
                        "fresh subset each epoch)")
    for name in ("train", "loso"):
        p = sub.add_parser(name, help="train the chosen settings" if name == "train" else "one run a source left out")
        p.add_argument("--pack", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True, help="run folder (resumes what is there)")
        p.add_argument("--encoder", default=CHOSEN["encoder"], help=f"config (default {CHOSEN['encoder']})")
        p.add_argument("--epochs", type=int, default=CHOSEN["epochs"], help=f"default {CHOSEN['epochs']}")
        p.add_argument("--lr", type=float, default=CHOSEN["lr"], help=f"default {CHOSEN['lr']:g}")
        p.add_argument("--batch-size", type=int, default=CHOSEN["batch_size"], help=f"default {CHOSEN['batch_size']}")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when present)")
        p.add_argument("--no-amp", dest="amp", action="store_false",
                       help="train in float32 (by default bf16 autocast on GPUs and on CPUs with bf16 instructions)")
        p.add_argument("--balance", action="store_true",
                       help="repeat the smaller sources' objects (balanced(): sqrt of the size ratio, at most "
                            f"{MAX_REPEATS}x); train it into a new run folder")
        p.add_argument("--repeat", action="append", default=[], metavar="SOURCE=N", type=_repeat,
                       help="repeat SOURCE's objects N times in every epoch (repeat the flag for more sources; "
                            "with --balance it overrides that source's count, else the others are taken once)")
        p.add_argument("--init", metavar="WEIGHTS",
                       help="start from these weights (an encoder.safetensors, or a bundle folder) instead of "
                            "random ones: a fine-tune, usually with a lower --lr")
        p.add_argument("--no-random-up", dest="random_up", action="store_false",
                       help="train in the pack's y-up frame only (a diagnosis: what the random up axis costs)")
        p.add_argument("--source-batches", action="store_true",
                       help="draw each batch from one source, so its negatives are of the same kind "
                            "(what does not fill a batch is mixed); train it into a new run folder")
    sub.choices["train"].add_argument("--upright", type=Path, metavar="UPRIGHT.npz",
                                      help="train on the frames this up-axis scorer (`upright --out`) leaves: "
                                           "each sample turned as a y-, z- or x-up file reads, then upright by "
                                           "the scorer (instead of the random up axis)")
    sub.choices["train"].add_argument("--known-frame", type=float, default=0.0, metavar="SHARE",
                                      help="with --upright: this share of the samples stays as it stands, as a "
                                           ".glb or a Blender scene (whose frame is known) is read without the "
                                           "scorer (default 0)")
    sub.choices["loso"].add_argument("--upright", action="store_true",
                                     help="the same, each run with a scorer of its own fitted without the source "
                                          "it leaves out (RUNS/SOURCE/upright.npz), which its bundle carries")
    sub.choices["loso"].add_argument("--left-out", action="append", default=[], metavar="SOURCE",
                                     help="leave out only this source (repeat for more; default each source with "
                                          "two labels or more, in turn): to share the runs among machines or days")
    sub.choices["loso"].add_argument("--init-runs", type=Path, metavar="RUNS",
                                     help="a second stage: each run starts from the weights of the run that left "
                                          "out the same source in RUNS (RUNS/SOURCE/encoder.safetensors)")
    sub.choices["train"].add_argument("--holdout", help="a source to leave out")
    sub.choices["train"].add_argument("--only", help="train on this source alone (a diagnosis: what it can teach "
                                                     "the encoder by itself)")
    sub.choices["train"].add_argument("--validate", action="store_true",
                                      help="train without the val objects and score them every 5 epochs")
    p = sub.add_parser("evaluate", help="held-out, leave-one-source-out and frame figures")
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--bundle", type=Path, action="append", required=True, help="a bundle to score (repeat to compare)")
    p.add_argument("--loso", type=Path, help="the folder `loso` trained into")
    p = sub.add_parser("upright", help="fit the up-axis scorer on the train objects")
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the scorer, UPRIGHT.npz")
    p.add_argument("--add-to", type=Path, action="append", default=[], metavar="BUNDLE",
                   help="carry it in this bundle too (repeat; not the shipped one)")
    p.add_argument("--validate", action="store_true", help="fit on the train objects alone, score the val ones")
    p = sub.add_parser("ship", help="export the trained weights as a bundle")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--encoder", default=CHOSEN["encoder"])
    p.add_argument("--upright", type=Path, help="an up-axis scorer (`upright --out`) for the bundle to carry")
    args = parser.parse_args(argv)
    try:
        if args.stage == "pack":
            print(write_pack(args.corpus.resolve(), args.out, args.points))
        elif args.stage in ("train", "loso"):
            job = {k: getattr(args, k) for k in ("encoder", "epochs", "lr", "batch_size", "seed", "balance",
                                                  "source_batches", "random_up", "upright", "amp", "init")}
            job["known_frame"] = getattr(args, "known_frame", 0.0)
            job["repeat"] = dict(args.repeat)
            if isinstance(job["upright"], Path):  # results are printed as JSON
                job["upright"] = str(job["upright"])
            if args.stage == "train":
                print(json.dumps(train(args.pack, job, args.out, holdout=args.holdout, only=args.only,
                                       validate=args.validate, device=args.device)))
            else:
                pack = Pack(args.pack)
                unknown = set(args.left_out) - set(pack.labels)
                if unknown:
                    raise Ulip2Error(f"--left-out {', '.join(sorted(unknown))}: not a source of {args.pack} with "
                                     f"two labels or more (those are {', '.join(pack.labels)})")
                for source in args.left_out or pack.labels:
                    run = args.out / source
                    if (run / LEFT_OUT).is_file():
                        print(f"{source}: done ({run / LEFT_OUT})", file=sys.stderr)
                        continue
                    if args.init_runs:
                        job["init"] = str(args.init_runs / source / "encoder.safetensors")
                        if not Path(job["init"]).is_file():
                            raise Ulip2Error(f"{job['init']}: missing; run the first stage's loso into "
                                             f"{args.init_runs} first")
                    if args.upright:  # the left-out source's geometry stays unseen by its scorer too
                        scorer = run / UPRIGHT_FILE
                        if not scorer.is_file():
                            upright(args.pack, scorer, exclude_source=source)
                        job["upright"] = str(scorer)
                    result = train(args.pack, job, run, holdout=source, device=args.device)
                    bundle = export(run / "encoder.safetensors", run / "bundle", job,
                                    f"training.recipes.corpus_model loso: every source but {source}", prompts=False)
                    if args.upright:
                        add_upright(bundle, Upright.load(job["upright"]))
                    print(json.dumps(result | {"left_out": score_left_out(pack, source, bundle, job)}))
        elif args.stage == "evaluate":
            print_report(evaluate(args.pack, args.bundle, args.loso))
        elif args.stage == "upright":
            print(json.dumps(upright(args.pack, args.out, args.add_to, validate=args.validate)))
        else:
            bundle = export(args.weights, args.bundle, {"encoder": args.encoder},
                            "training.recipes.corpus_model: the multi-source corpus")
            if args.upright:
                add_upright(bundle, Upright.load(args.upright))
            print(bundle)
    except (Ulip2Error, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
