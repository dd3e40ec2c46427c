"""Choosing the default model's training settings on a validation split, and training it.

Both run from a *pack*: one .npz (about 35 MB) with what training and selection read and
nothing of the held-out items, so the work can move to a GPU machine the triplet stores
(hundreds of MB) cannot reach:

    ids, classnames          (in the .json beside it) training objects, the label set
    <store>_points           (M, 2048, 6) float16  a fixed random subset of each stored
                             10k cloud (the encoder takes 1,024 a step), for the point
                             store (trimesh) and the render store (Blender)
    <store>_text, _offsets   caption vectors of each store, object i's at off[i]:off[i+1]
    val_mask                 (M,) the validation split: 20% of the labelled training items
    val_points_<n>, val_labels  those items sampled from their mesh files as `ulip2 eval`
                             samples them, at the point counts of the configs compared
    class_vectors            the label set's prompt-ensemble vectors

Selection trains each configuration of `grid()` with three seeds on the training objects
outside the validation split and ranks them by mean validation top-1; the held-out items
never take part. The chosen configuration is then trained on every training object.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from core.progress import bar

from .sweethome3d import read_catalogue

PACK_POINTS = 2048
VAL_FRACTION = 0.2
VAL_SEED = 12345
SEEDS = (0, 1, 2)
# What `select` chose (README, 'The default model': mean validation top-1 0.411 over 3 seeds).
CHOSEN = {"source": "points", "encoder": "pointbert-mini", "epochs": 40, "lr": 1e-3}
# Where each source takes points and captions from: the point store (trimesh samples, the
# catalogue's texts) or the render store (Blender samples; metadata captions of the views
# beside the catalogue's texts), and whether an object's repeated captions count once.
SOURCES = {
    "points": ("points", ("points",), False),
    "render": ("render", ("render",), False),
    "render_dedupe": ("render", ("render",), True),
    "mixed": ("points", ("points", "render"), True),
}


def write_pack(data: Path, point_store: Path, render_store: Path, out: Path, space_name: str) -> Path:
    """The pack of two feature caches (same objects) and the catalogue at `data`."""
    from core.spaces.vocabularies import prompt_name
    from core.meshio import load_points
    from core.spaces import load_space
    from core.triplets import key_for_file

    from ..features import load_or_build_features

    records = read_catalogue(data)["records"]
    stores = {"points": load_or_build_features(point_store, space_name),
              "render": load_or_build_features(render_store, space_name)}
    ids = stores["points"].ids
    if set(stores["render"].ids) != set(ids):
        raise ValueError(f"{point_store} and {render_store} hold different objects; build both from one catalogue")
    position = {key: i for i, key in enumerate(stores["render"].ids)}
    stores["render"] = stores["render"].subset([position[k] for k in ids])
    record_of = {}  # the labelled training items (split "train"), by triplet key
    for record in records:
        if record["split"] == "train" and record["class"] and not record["load_error"]:
            record_of.setdefault(key_for_file(data / record["mesh"]), record)
    labelled = sorted(k for k in ids if k in record_of)
    val = set(np.random.default_rng(VAL_SEED).choice(labelled, size=max(1, round(VAL_FRACTION * len(labelled))),
                                                     replace=False).tolist())
    classnames = sorted({r["class"] for r in records if r["class"]})
    arrays = {"val_mask": np.array([k in val for k in ids]),
              "class_vectors": load_space(space_name).embed_prompts([prompt_name(c) for c in classnames])}
    rng = np.random.default_rng(0)
    for name, features in stores.items():
        arrays[f"{name}_points"] = np.stack([p[rng.choice(len(p), PACK_POINTS, replace=False)]
                                             for p in features.points]).astype(np.float16)
        arrays[f"{name}_text"] = np.asarray(features.text, np.float16)
        arrays[f"{name}_offsets"] = np.asarray(features.text_offsets)
    val_records = [record_of[k] for k in ids if k in val]
    arrays["val_labels"] = np.array([classnames.index(r["class"]) for r in val_records])
    for n in sorted({_num_points(c["encoder"]) for c in grid()}):
        arrays[f"val_points_{n}"] = np.stack([load_points(data / r["mesh"], n, seed=0)[:, :6]
                                              for r in val_records]).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".tmp.npz"), **arrays)
    out.with_suffix(".tmp.npz").replace(out)
    out.with_suffix(".json").write_text(json.dumps({"space": space_name, "ids": ids, "classnames": classnames}))
    return out


def load_pack(path: Path) -> tuple[dict, dict]:
    from core.errors import Ulip2Error

    try:
        with np.load(path) as data:
            arrays = dict(data)
        return arrays, json.loads(Path(path).with_suffix(".json").read_text())
    except (OSError, ValueError) as exc:
        raise Ulip2Error(f"{path}: not a readable pack ({exc}); write one with: "
                         "python -m training.recipes.default_model pack --data DATA --work WORK") from None


def _num_points(encoder: str) -> int:
    from core.models import get_config

    return get_config(encoder).num_points


def source_features(pack: dict, meta: dict, source: str, keep: np.ndarray):
    """TripletFeatures of the kept objects as `source` reads them."""
    from ..features import TripletFeatures

    points_from, texts_from, dedupe = SOURCES[source]
    index = np.flatnonzero(keep)
    texts = []
    for i in index:
        own = np.concatenate([pack[f"{s}_text"][pack[f"{s}_offsets"][i]:pack[f"{s}_offsets"][i + 1]]
                              for s in texts_from])
        texts.append(np.unique(own, axis=0) if dedupe else own)
    return TripletFeatures.from_lists(meta["space"], [meta["ids"][i] for i in index],
                                      pack[f"{points_from}_points"][index], texts)


def grid() -> list[dict]:
    """The configurations compared, most likely first (a time limit keeps the first ones)."""
    mini = "pointbert-mini"
    configs = [dict(source=s, encoder=mini, epochs=e, lr=1e-3)
               for e in (40, 15) for s in ("points", "mixed", "render_dedupe", "render")]
    configs += [dict(source=s, encoder="pointbert-small", epochs=40, lr=1e-3) for s in ("points", "mixed")]
    configs += [dict(source=s, encoder=mini, epochs=40, lr=lr) for lr in (3e-3, 3e-4) for s in ("points", "mixed")]
    configs += [dict(source=s, encoder=mini, epochs=80, lr=1e-3) for s in ("points", "mixed")]
    return configs


def _device(name: str):
    import torch

    from ..trainer import init_distributed

    return init_distributed() if name == "auto" else torch.device(name)


def validation_top1(model, pack: dict, meta: dict, device) -> tuple[float, float]:
    import torch

    from core.spaces.ranking import zero_shot

    points = pack[f"val_points_{model.config.num_points}"]
    model.eval()
    with torch.no_grad():
        embedded = torch.cat([model(torch.from_numpy(points[i:i + 64]).to(device)).float()
                              for i in range(0, len(points), 64)]).cpu().numpy()
    labels = [meta["classnames"][i] for i in pack["val_labels"]]
    result = zero_shot(embedded, labels, pack["class_vectors"], meta["classnames"])
    return result["top1"], result["top5"]


def train(pack_path: Path, job: dict, out: Path, *, device: str = "auto", validate: bool = False,
          show_progress: bool = True) -> dict:
    """Train one configuration (job: SOURCES key, encoder, epochs, lr, seed). With `validate`,
    on the objects outside the validation split, scoring it every 5 epochs; else on every
    training object, with checkpoints and resume (Trainer.fit) and the weights in out."""
    from ..trainer import Trainer, TrainConfig

    pack, meta = load_pack(pack_path)
    keep = ~pack["val_mask"] if validate else np.ones(len(meta["ids"]), bool)
    features = source_features(pack, meta, job["source"], keep)
    config = TrainConfig(encoder=job["encoder"], epochs=job["epochs"], batch_size=job.get("batch_size", 32),
                         lr=job["lr"], seed=job["seed"])
    trainer = Trainer(features, config, out, device=_device(device))
    start, result = time.perf_counter(), dict(job, train_objects=len(features))
    if not validate:
        trainer.resume()
        with bar("training", "step", enabled=show_progress, status=lambda: trainer.status) as on_progress:
            history = trainer.fit(on_progress)
        return result | {"final_loss": round(history[-1]["loss"], 4) if history else None,
                         "seconds": round(time.perf_counter() - start, 1), "weights": str(out / "encoder.safetensors")}
    curve = []
    while trainer.epoch < config.epochs:
        metrics = trainer.train_epoch()
        if trainer.epoch % 5 == 0 or trainer.epoch == config.epochs:
            top1, top5 = validation_top1(trainer.model, pack, meta, trainer.device)
            curve.append({"epoch": trainer.epoch, "loss": round(metrics["loss"], 4), "val_top1": round(top1, 4)})
            trainer.model.train()
    return result | {"val_top1": top1, "val_top5": top5, "curve": curve, "seconds": round(time.perf_counter() - start, 1)}


def _run_name(job: dict) -> str:
    return f"{job['source']}-{job['encoder']}-e{job['epochs']}-lr{job['lr']}-s{job['seed']}"


def _validate(args) -> dict:
    """One selection run in a pool worker; runs share the machine, two threads each."""
    import torch

    torch.set_num_threads(2)
    pack_path, job, out, device = args
    return train(pack_path, job, out / "runs" / _run_name(job), device=device, validate=True, show_progress=False)


def select(pack_path: Path, out: Path, *, device: str = "auto", workers: int = 1,
           time_limit: float | None = None, configs: list[dict] | None = None) -> dict:
    """Every configuration (default: grid()) with each seed, on the validation split, `workers` at a time;
    no new run starts after `time_limit` seconds. Writes out/selection.jsonl (one line a run)
    and out/selection.json (configs by mean validation top-1, the chosen one first)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    jobs = [dict(config, seed=seed) for config in configs or grid() for seed in SEEDS]
    start, results = time.perf_counter(), []
    context = multiprocessing.get_context("spawn")  # CUDA in each worker
    with context.Pool(workers) as pool, open(out / "selection.jsonl", "w") as log, \
            tqdm(total=len(jobs), desc="selection", unit="run", file=sys.stderr, dynamic_ncols=True) as bar:
        pending = []
        while jobs or pending:
            while jobs and len(pending) < workers and (time_limit is None or time.perf_counter() - start < time_limit):
                pending.append(pool.apply_async(_validate, ((pack_path, jobs.pop(0), out, device),)))
            if not pending:
                break
            done = [p for p in pending if p.ready()]
            for p in done:
                pending.remove(p)
                results.append(p.get())
                log.write(json.dumps(results[-1]) + "\n")
                log.flush()
                bar.update(1)
            time.sleep(0.2)
    ranked = rank(results)
    (out / "selection.json").write_text(json.dumps(ranked, indent=1) + "\n")
    return ranked


def rank(results: list[dict]) -> dict:
    """Configurations with every seed run, by mean validation top-1."""
    by_config: dict[str, list[float]] = {}
    for r in results:
        key = json.dumps({k: r[k] for k in ("source", "encoder", "epochs", "lr")})
        by_config.setdefault(key, []).append(r["val_top1"])
    table = sorted(({**json.loads(k), "val_top1_mean": round(float(np.mean(v)), 4), "seeds": len(v)}
                    for k, v in by_config.items() if len(v) == len(SEEDS)),
                   key=lambda row: -row["val_top1_mean"])
    chosen = {k: table[0][k] for k in CHOSEN} if table else None
    return {"chosen": chosen, "table": table, "runs": len(results)}
