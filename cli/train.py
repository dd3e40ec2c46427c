"""`ulip2 features` and `ulip2 train`. Light to import: torch loads inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cli import add_command
from core.progress import bar


def cmd_features(args) -> int:
    from training.features import build_features

    with bar("features", "object") as on_progress:
        out = build_features(args.store, args.space, out=args.out, device=args.device, on_progress=on_progress)
    print(json.dumps({"features": str(out)}))
    return 0


def cmd_train(args) -> int:
    from core.errors import Ulip2Error

    from training.features import TripletFeatures, build_features, cache_folder
    from training.trainer import ENCODER_FILE, Trainer, TrainConfig, init_distributed

    source = args.data
    if (source / "store.json").is_file():  # a triplet store: use (or build) its feature cache
        folder = cache_folder(source, args.space)
        if not (folder / "meta.json").is_file():
            with bar("features", "object") as on_progress:
                folder = build_features(source, args.space, on_progress=on_progress)
        source = folder
    features = TripletFeatures.load(source)
    device = init_distributed()
    try:
        config = TrainConfig(encoder=args.config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, seed=args.seed,
                             amp=not args.no_amp, up_axis=args.up, random_up=args.random_up,
                             init=str(args.init) if args.init else None,
                             upright=str(args.upright) if args.upright else None, known_frame=args.known_frame)
        trainer = Trainer(features, config, args.out, device=device)
    except ValueError as exc:
        raise Ulip2Error(str(exc)) from exc
    if args.resume and trainer.resume():
        print(f"resuming after epoch {trainer.epoch}", file=sys.stderr)
    with bar("training", "step", status=lambda: trainer.status) as on_progress:
        history = trainer.fit(on_progress)
    if trainer.rank == 0:
        result = {"out": str(args.out), "epochs": trainer.epoch, "last": history[-1] if history else None}
        if args.bundle:
            from core.export import add_upright, export_bundle

            bundle = export_bundle(args.bundle, model=trainer.model.eval(), space=features.space, overwrite=True,
                                   source=f"ulip2 train ({args.out / ENCODER_FILE})")
            if trainer.augment.upright is not None:
                bundle = add_upright(bundle.path, trainer.augment.upright)
            result["bundle"] = str(bundle.path)
        print(json.dumps(result))
    return 0


def cmd_eval(args) -> int:
    from core.runtime import PointEncoder
    from core.spaces import text_encoder

    from training.evaluation import evaluate, load_eval_set

    encoder = PointEncoder(args.bundle, device=args.device)
    # The bundle's text side, as every surface embeds texts (its tower: no torch after the first use).
    result = evaluate(encoder, text_encoder(encoder.bundle), load_eval_set(args.path, encoder.num_points))
    result["bundle"] = str(encoder.bundle.path)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'set':20s} {'objects':>8s} {'classes':>8s} {'top-1':>7s} {'top-5':>7s}")
    print(f"{result['set']:20s} {result['n']:8d} {result['classes']:8d} {result['top1']:7.1%} {result['top5']:7.1%}")
    _say_left_out(result["failed"] + result["skipped"])
    return 0


def _say_left_out(entries: list[dict]) -> None:
    """One line per file left out of an evaluation: it failed to load ("error") or its format
    or place is not read ("reason")."""
    for entry in entries:
        print(f"skipped {entry['path']}: {entry.get('error') or entry['reason']}", file=sys.stderr)


def cmd_retrain(args) -> int:
    from core.bundle import default_bundle_path

    from training.retrain import retrain

    source = args.source or default_bundle_path()
    work = args.work or args.out.with_name(args.out.name + ".work")
    result = retrain(args.paths, source, args.out, work, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, holdout=args.holdout, views=args.views, resolution=args.resolution,
                     captioner=args.captioner, workers=args.workers)
    b, a = result["before"], result["after"]
    _say_left_out(result["held_out_failed"] + result["skipped"])
    print(f"held-out zero-shot on {b['n']} of {result['held_out']} held-out assets, {b['classes']} labels:",
          file=sys.stderr)
    print(f"  before  top-1 {b['top1']:.1%}  top-5 {b['top5']:.1%}", file=sys.stderr)
    print(f"  after   top-1 {a['top1']:.1%}  top-5 {a['top5']:.1%}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def register(sub) -> None:
    p = add_command(
        sub, "features", cmd_features, "embed a triplet store's captions and views once, for training",
        description="Embed the chosen captions (and the views, where the space has an image tower) of every\n"
                    "captioned record with the frozen space, into STORE/features/<space>/. Resumable.")
    p.add_argument("store", type=Path, metavar="STORE", help="the triplet store folder (ulip2 triplets build)")
    p.add_argument("--space", default="minilm", help="frozen space to embed with (default minilm)")
    p.add_argument("--out", type=Path, help="cache folder (default STORE/features/<space>)")
    p.add_argument("--device", default="cpu", help="torch device for the space (cpu, cuda)")

    p = add_command(
        sub, "train", cmd_train, "train the 3D encoder on a triplet store or feature cache (torchrun for many GPUs)",
        description="Contrastive training of the 3D encoder against the frozen space (ULIP-2's recipe):\n"
                    "points<->text (+ points<->image), AdamW + cosine with warm-up, AMP on GPU, a checkpoint\n"
                    "each epoch (OUT/last.pt, OUT/encoder.safetensors) and OUT/metrics.jsonl.",
        epilog="examples:\n"
               "  ulip2 train my-store --out runs/a --epochs 20 --bundle bundles/mine\n"
               "  torchrun --nproc_per_node 8 -m cli train my-store --out runs/a   (DDP, global batch split)\n"
               "  ulip2 train my-store --out runs/a --resume        (continue after a stop or crash)")
    p.add_argument("data", type=Path, metavar="STORE_OR_FEATURES", help="a triplet store, or the feature cache ulip2 features made of one")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints and metrics")
    p.add_argument("--space", default="minilm", help="space of the features (default minilm)")
    p.add_argument("--config", default="pointbert-small", help="encoder config (default pointbert-small)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the data (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, after warm-up (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on weights of 2+ dimensions (default 0.1)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up from 1e-6, in epochs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="every random choice follows from it (default 0)")
    p.add_argument("--up", choices=("x", "y", "z"), default="y", help="up axis for rotation augmentation (default y)")
    p.add_argument("--random-up", action="store_true",
                   help="also turn each sample's up axis onto a random axis direction, so the model "
                        "knows assets saved y-up and z-up alike")
    p.add_argument("--upright", type=Path, metavar="UPRIGHT.npz",
                   help="instead, train on the frames this up-axis scorer leaves (turned as a y-, z- or x-up "
                        "file reads, then upright by it); the bundle then needs the same scorer to embed "
                        "what it learnt (--bundle carries it)")
    p.add_argument("--known-frame", type=float, default=0.0, metavar="SHARE",
                   help="with --upright: this share of the samples stays as it stands, as a .glb or a Blender "
                        "scene (whose frame is known) is read without the scorer (default 0)")
    p.add_argument("--init", type=Path,
                   help="start from a bundle (its config and weights), a ULIP-2 .pt or a ulip2 .safetensors")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (by default bf16 autocast on GPUs and on CPUs with bf16 instructions)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--bundle", type=Path, help="export the trained encoder to this bundle folder at the end")

    p = add_command(
        sub, "eval", cmd_eval, "zero-shot top-1/top-5 of a bundle on a labelled set",
        description="Zero-shot classification with ULIP's 64 prompt templates per class. PATH is a folder of\n"
                    "meshes in one subfolder per label, a CSV of path,label, a ModelNet40 10k folder, an\n"
                    "Objaverse-LVIS folder (lvis.json + npy dicts) or a ScanObjectNN .h5 file.")
    p.add_argument("path", type=Path, metavar="PATH", help="the labelled set (layouts above)")
    p.add_argument("--bundle", type=Path, help="model bundle (default: $ULIP2_BUNDLE, else the shipped one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where onnxruntime runs (default: auto, CUDA when there is one)")
    p.add_argument("--json", action="store_true", help="print the full result, per-class accuracy included, as JSON")

    p = add_command(
        sub, "retrain", cmd_retrain, "fine-tune a bundle on your own assets: triplets -> features -> train -> eval -> export",
        description="One command from asset folders to a new bundle. Put assets in one subfolder per label\n"
                    "(PATH/<label>/...): a fixed share of each label is held out and the zero-shot accuracy on\n"
                    "it is printed before and after. Every stage resumes: rerun the same command after a stop.",
        epilog="example:\n  ulip2 retrain studio-assets/ --from bundles/default --out bundles/studio --epochs 10")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="asset folders, one subfolder per label")
    p.add_argument("--from", dest="source", type=Path, help="bundle to start from (default: the default bundle)")
    p.add_argument("--out", type=Path, required=True, help="the new bundle folder")
    p.add_argument("--work", type=Path, help="working folder (default: OUT.work): store, features, run")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=32, help="batch (default 32)")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (default 3e-4)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of each label held out (default 0.2)")
    p.add_argument("--views", type=int, default=12, help="rendered views per asset (default 12)")
    p.add_argument("--resolution", type=int, default=224, help="view size (default 224)")
    p.add_argument("--captioner", default="metadata",
                   help="metadata (offline, names and measured colours; default), blip or blip2")
    p.add_argument("--workers", type=int, default=1, help="parallel Blender workers (default 1)")
