"""`ulip2 embed`, `export`, `models list|import-ulip2|pull|add-text` and `info`: model
bundles and the embeddings they make."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import add_command, print_json
from core.errors import AssetError
from core.formats import FRAME_STATED
from core.progress import bar


# -- embed ------------------------------------------------------------------------------

def cmd_embed(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from core.runtime import PointEncoder

    encoder = PointEncoder(args.bundle, device=args.device)
    done, vectors, failed = [], [], []
    for path in tqdm(args.files, desc="embedding", unit="file", file=sys.stderr, dynamic_ncols=True,
                     disable=len(args.files) < 2):
        try:
            _, vec = next(iter(encoder.embed_files([path], seed=args.seed)))
        except AssetError as exc:
            failed.append({"path": exc.path or str(path), "error": exc.reason})  # a name made printable, if it was not
            print(f"error: {exc}", file=sys.stderr)
            continue
        done.append(str(path))
        vectors.append(vec)
    matrix = np.stack(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    summary = {"bundle": str(encoder.bundle.path), "space": encoder.bundle.space, "dim": encoder.dim,
               "providers": encoder.providers, "failed": failed}
    if args.out and args.out.suffix == ".npy":
        np.save(args.out, matrix)
        print_json({**summary, "out": str(args.out), "rows": done})
    else:
        result = {**summary, "embeddings": [{"path": p, "embedding": v.tolist()} for p, v in zip(done, matrix)]}
        if args.out:
            args.out.write_text(json.dumps(result) + "\n")
            print_json({**summary, "out": str(args.out), "rows": done})
        else:
            print_json(result)
    return 1 if failed else 0


# -- export / models --------------------------------------------------------------------

def _export(out, **kwargs) -> int:
    from tqdm import tqdm

    from core.export import export_bundle

    with tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr, dynamic_ncols=True) as steps, \
            bar("prompt ensembles", "class") as on_progress:
        bundle = export_bundle(out, on_step=steps.set_description_str, on_progress=on_progress, **kwargs)
        steps.set_description_str("done")
    print_json(bundle.to_json() | {"path": str(bundle.path)})
    return 0


def cmd_export(args) -> int:
    return _export(args.out, config=args.config, space=args.space, checkpoint=args.checkpoint,
                   fp16=args.fp16, text=args.text, prompts=args.prompts, seed=args.seed, overwrite=args.overwrite)


def cmd_models_list(args) -> int:
    from core.models.config import get_config, list_configs
    from core.registry import RELEASES

    print("encoder configs (ulip2 export --config NAME):")
    for name in list_configs():
        print(f"  {name:20s} {get_config(name).description}")
    print("released checkpoints (ulip2 models pull NAME):")
    for release in RELEASES.values():
        print(f"  {release.name:20s} {release.description}")
    return 0


def cmd_models_import(args) -> int:
    from core.spaces import ULIP2_SPACE

    return _export(args.out, config="ulip2-pointbert", space=args.space or ULIP2_SPACE,
                   checkpoint=args.checkpoint, fp16=args.fp16, text=args.text, prompts=args.prompts, overwrite=args.overwrite)


def cmd_models_pull(args) -> int:
    from core.registry import download_release, get_release

    release = get_release(args.name)
    print(f"downloading {release.hf_file} ...", file=sys.stderr)
    checkpoint = download_release(args.name)
    if not args.no_space:
        from core.spaces import load_space

        print(f"fetching space {release.space} ...", file=sys.stderr)
        load_space(release.space)
    return _export(args.out, config=release.config, space=release.space, checkpoint=checkpoint,
                   fp16=args.fp16, text=args.text, prompts=args.prompts, overwrite=args.overwrite)


def cmd_models_add_text(args) -> int:
    import shutil

    from core.bundle import read_bundle
    from core.errors import BundleError
    from core.export import add_text_tower
    from core.paths import replacing_folder

    source = read_bundle(args.bundle, warn_untrained=False)
    out = args.out.expanduser()
    print(f"exporting the text tower of {source.space} ...", file=sys.stderr)
    with bar("prompt ensembles", "class") as on_progress:
        if out.resolve() == source.path:
            bundle = add_text_tower(out, args.prompts, on_progress=on_progress)
        else:
            if out.exists() and any(out.iterdir()) and not args.overwrite:
                raise BundleError(f"{out} exists and is not empty; pick a new folder or pass --overwrite")
            with replacing_folder(out) as staging:  # a failed export leaves no half bundle at --out
                shutil.copytree(source.path, staging, dirs_exist_ok=True)
                add_text_tower(staging, args.prompts, on_progress=on_progress)
            bundle = read_bundle(out, warn_untrained=False)
    print_json(bundle.to_json() | {"path": str(bundle.path)})
    return 0


def cmd_info(args) -> int:
    from core.bundle import read_bundle

    bundle = read_bundle(args.bundle, warn_untrained=False)
    info = bundle.to_json() | {"path": str(bundle.path)}
    if args.json:
        print_json(info)
        return 0
    cfg = bundle.config
    print(f"bundle     {bundle.path}")
    print(f"space      {bundle.space} ({bundle.dim}-d)")
    print(f"encoder    {cfg['name']}: {cfg['depth']} blocks x {cfg['trans_dim']}, {cfg['num_group']} groups of {cfg['group_size']}")
    print(f"input      {bundle.num_points} points x {bundle.channels} channels (xyz, rgb)")
    print(f"files      {', '.join(f'{k}: {v}' for k, v in bundle.files.items())}")
    if bundle.has_text:
        print(f"text tower {bundle.text['onnx']} + {bundle.text['tokenizer']} (texts embed without torch)")
    else:
        print(f"text tower none (texts need torch; add one: ulip2 models add-text {args.bundle} --out DIR)")
    if bundle.upright:
        print(f"up axis    {bundle.upright}: files that do not say which axis is up (OBJ, STL, PLY, OFF, DAE) are "
              f"turned upright first; {', '.join(FRAME_STATED)} files and Blender scenes are read as they say")
    else:
        print("up axis    as read (no up-axis scorer: a file saved z-up is seen lying down)")
    print(f"trained    {'yes' if bundle.trained else 'NO (random weights: embeddings carry no meaning)'}")
    print(f"provenance {json.dumps(bundle.provenance)}")
    return 0


def register(sub) -> None:
    def bundle_arg(p):
        p.add_argument("--bundle", type=Path, default=None,
                       help="model bundle folder (default: $ULIP2_BUNDLE, else the bundle shipped with ulip2)")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where onnxruntime runs: auto takes CUDA when onnxruntime-gpu sees a GPU (default: auto)")

    p = add_command(sub, "embed", cmd_embed, "embed mesh files (glb, gltf, obj, ply, stl, off) with a model bundle",
            epilog="Prints JSON ({path, embedding} per file); --out FILE.npy writes the (files x dim) array\n"
                   "in the order of 'rows' printed. Bad files are reported and skipped (exit code 1).")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="mesh files to embed")
    bundle_arg(p)
    p.add_argument("--out", type=Path, help="write embeddings to FILE.npy or FILE.json instead of stdout")
    p.add_argument("--seed", type=int, default=0, help="point sampling seed (same seed, same points; default 0)")

    def prompts_arg(p):
        from core.spaces.vocabularies import VOCABULARIES

        p.add_argument("--prompts", nargs="*", metavar="VOCAB", default=list(VOCABULARIES),
                       help="with a text tower: shipped vocabularies whose prompt ensembles to compute now and "
                            f"carry, so tagging with them embeds no prompts (default: {' '.join(VOCABULARIES)}; "
                            "LVIS takes minutes on a CPU; --prompts alone: none)")

    def export_args(p, *, config=True):
        p.add_argument("--out", type=Path, required=True, help="bundle folder to create")
        if config:
            p.add_argument("--config", default="pointbert-small",
                           help="encoder config (see 'ulip2 models list'; default pointbert-small)")
        p.add_argument("--fp16", action="store_true", help="also write a float16 encoder (for GPUs)")
        p.add_argument("--text", action="store_true",
                       help="also write the space's text tower (ONNX + tokenizer; minilm: about 90 MB), "
                            "so texts embed without torch, as in Blender")
        prompts_arg(p)
        p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")

    p = add_command(sub, "export", cmd_export, "export a 3D encoder to an ONNX model bundle",
            epilog="Without --checkpoint the weights are random: the bundle says \"trained\": false and every\n"
                   "command that uses it warns. --checkpoint takes a released ULIP-2 .pt or a ulip2 .safetensors.")
    export_args(p)
    p.add_argument("--space", default="minilm", help="space the encoder targets (default minilm; see ulip2 --help)")
    p.add_argument("--checkpoint", type=Path, help="weights to load (every key and shape is checked)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (default 0)")

    models = add_command(sub, "models", None, "list, fetch and import released 3D encoders")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    m = msub.add_parser("list", help="shipped encoder configs and released checkpoints")
    m.set_defaults(func=cmd_models_list)
    m = msub.add_parser("import-ulip2", help="turn a released ULIP-2 Point-BERT checkpoint (.pt) into a bundle")
    m.add_argument("checkpoint", type=Path, metavar="CKPT", help="the released .pt (read with weights only, never unpickled)")
    export_args(m, config=False)
    m.add_argument("--space", default=None,
                   help="space of the checkpoint (default openclip:ViT-bigG-14:laion2b_s39b_b160k, ULIP-2's)")
    m.set_defaults(func=cmd_models_import)
    m = msub.add_parser("pull", help="download a released checkpoint and its space, then make a bundle (needs network)")
    m.add_argument("name", metavar="NAME", help="release name (see 'ulip2 models list')")
    export_args(m, config=False)
    m.add_argument("--no-space", action="store_true", help="do not fetch the space's weights now")
    m.set_defaults(func=cmd_models_pull)
    help_text = ("copy a bundle and add its space's text tower (ONNX + tokenizer), "
                 "so texts embed without torch (the Blender panels need it)")
    m = msub.add_parser("add-text", help=help_text, description=help_text,
                        epilog="BUNDLE 'default' is the bundle used when none is named (the shipped one, which\n"
                               "stays as installed). Needs the torch extra once, to export; minilm adds about 90 MB.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle folder, or 'default'")
    m.add_argument("--out", type=Path, required=True, help="folder for the copy (BUNDLE itself: add in place)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    prompts_arg(m)
    m.set_defaults(func=cmd_models_add_text)

    p = add_command(sub, "info", cmd_info, "describe a model bundle")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle folder, or 'default'")
    p.add_argument("--json", action="store_true", help="print bundle.json as JSON")
