"""`ulip2 index | thumbnails | search | tag | caption | report | demo`: the asset library on the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli import add_command, print_json
from core.library.store import DB_ENV, DEFAULT_DB_NAME
from core.progress import bar

_DB_HELP = f"library file (default: ${DB_ENV}, else ./{DEFAULT_DB_NAME})"
_BUNDLE_HELP = "model bundle folder (default: $ULIP2_BUNDLE, else the bundle shipped with ulip2)"
_LOADERS_HELP = ("loader processes (default: none on 2 cores or fewer, where a loader thread reads ahead of the "
                 "encoder; else one per CPU but one; 0: the thread)")
#: Searches a report shows when none are named: kinds of asset the sample library holds
#: (furniture, animals, plants, vehicles, buildings).
DEFAULT_QUERIES = ("a chair", "a lamp", "a horse", "a tree", "a car", "a tower")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a count of results, a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a count of at least 1")
    return value


def asset_format(text: str) -> str:
    """argparse type: a file format ulip2 indexes ('glb' or '.glb'), as its extension without the dot."""
    from core.formats import ASSET_EXTENSIONS

    known = sorted(e.lstrip(".") for e in ASSET_EXTENSIONS)
    name = text.lower().lstrip(".")
    if name not in known:
        raise argparse.ArgumentTypeError(f"{text!r} is not a format ulip2 indexes; choose from {', '.join(known)}")
    return name


def _open(args, *, create: bool = False, read_only: bool = False):
    from core.library.store import Library

    return Library(args.db, create=create, read_only=read_only)


def _bundle(args):
    from core.bundle import default_bundle_path, read_bundle

    return read_bundle(args.bundle or default_bundle_path())


def _table(rows: list[list], header: list[str]) -> None:
    """Left-aligned columns; the last column takes the rest of the line."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for row in [header] + rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        print("  ".join(cells + [str(row[-1])]))


# -- index ------------------------------------------------------------------------------

def cmd_index(args) -> int:
    from core.library.indexer import index_paths
    from core.runtime import PointEncoder

    encoder = PointEncoder(args.bundle, device=args.device)
    with _open(args, create=True) as library:
        with bar("indexing", "file", enabled=not args.quiet) as on_progress:
            report = index_paths(args.paths, library, encoder, batch_size=args.batch_size, workers=args.workers,
                                 seed=args.seed, thumbnails=args.thumbnails != "none", on_progress=on_progress,
                                 retry_failed=args.retry_failed, engine=args.engine)
        rendered = _render_thumbnails(library, args) if args.thumbnails == "blender" else None
    if args.json:
        print_json(report.to_json() | {"db": str(library.path)}
                    | ({"thumbnails": rendered.to_json()} if rendered else {}))
    else:
        print(f"{library.path}: {report.seen} files seen, {report.added} added, {report.updated} updated, "
              f"{report.unchanged} unchanged, {report.removed} removed, {len(report.failed)} failed"
              + (f" ({report.known_errors} known bad files skipped; retry them with --retry-failed)"
                 if report.known_errors else "")
              + f" in {report.seconds:.1f} s")
        if rendered:
            _print_thumbnails(library, rendered)
    return 1 if report.failed or (rendered and rendered.failed) else 0


# -- thumbnails -------------------------------------------------------------------------

def _render_thumbnails(library, args):
    from core.library.thumbnails import render_thumbnails

    with bar("rendering thumbnails", "asset", enabled=not args.quiet) as on_progress:
        return render_thumbnails(library, workers=args.workers, redo=getattr(args, "redo", False),
                                 on_progress=on_progress)


def _print_thumbnails(library, report) -> None:
    print(f"{library.path}: {report.rendered} thumbnails rendered in Blender, {len(report.failed)} files failed "
          f"(their point previews stay) in {report.seconds:.1f} s")


def cmd_thumbnails(args) -> int:
    with _open(args) as library:
        report = _render_thumbnails(library, args)
    if args.json:
        print_json(report.to_json() | {"db": str(library.path)})
    else:
        _print_thumbnails(library, report)
    return 1 if report.failed else 0


# -- search -----------------------------------------------------------------------------

def cmd_search(args) -> int:
    from core.library.search import Searcher

    if not args.like and not args.image and not (args.text or "").strip():
        print('error: the query is empty: give words to look for ("a wooden chair"), --like MESH or --image PHOTO',
              file=sys.stderr)
        return 2
    with _open(args, read_only=True) as library:
        searcher = Searcher(library, args.bundle, device=args.device)
        exclude = None
        if args.like:
            query, exclude = searcher.like_vector(args.like)
        elif args.image:
            query = searcher.image_vector(args.image)
        else:
            query = searcher.text_vector(args.text, space=args.space)
        hits = searcher.search(query, args.k, formats=args.format or (), folder=args.folder,
                               tags=args.tag or (), exclude=exclude)
    if args.json:
        print_json({"query": args.text or {"like": args.like, "image": args.image},
                     "bundle": searcher.bundle_id, "space": searcher.bundle.space,
                     "hits": [h.to_json() for h in hits]})
    elif not hits:
        print("no matches (check the filters)")
    else:
        _table([[rank, f"{h.score:.3f}", h.format, h.path + (f" ({h.object})" if h.object else "")]
                for rank, h in enumerate(hits, 1)], ["#", "score", "format", "path"])
    return 0


# -- tag / caption ----------------------------------------------------------------------

def _labels_out(args, library, name: str, labels: dict, kind: str) -> None:
    from core.library.tagging import export_labels

    if args.export:
        export_labels(library, labels, args.export, kind=kind)
        print(f"wrote {len(labels)} assets' {kind}s to {args.export}", file=sys.stderr)
    paths = {i: row["path"] for i, row in library.assets(list(labels)).items()}
    if args.json:
        print_json({"source": name, "assets": {paths[i]: [{kind: t, "score": s} for t, s in rows]
                                                for i, rows in labels.items()}})
        return
    for asset_id, rows in sorted(labels.items(), key=lambda item: paths[item[0]]):
        text = "; ".join(f"{t} ({s:.2f})" for t, s in rows) or "-"
        print(f"{paths[asset_id]}\n    {text}")


def cmd_tag(args) -> int:
    from core.library.tagging import tag_library

    bundle = _bundle(args)
    with _open(args) as library, bar("embedding the vocabulary", "class") as on_progress:
        name, tags = tag_library(library, bundle, args.vocab, k=args.k, threshold=args.threshold, on_progress=on_progress)
        _labels_out(args, library, name, tags, "tag")
    return 0


def cmd_caption(args) -> int:
    from core.library.tagging import caption_library

    bundle = _bundle(args)
    with _open(args) as library:
        name, captions = caption_library(library, bundle, args.bank, k=args.k)
        _labels_out(args, library, name, captions, "caption")
    return 0


# -- report / demo ----------------------------------------------------------------------

def _say(message: str) -> None:
    """Progress for a person watching; stdout stays for the result (the page's path)."""
    print(message, file=sys.stderr, flush=True)


def cmd_report(args) -> int:
    from core.library.report import write_report
    from core.spaces.vocabularies import load_bank, load_vocabulary

    bundle = _bundle(args)
    vocab = load_vocabulary(args.vocab)[0] if args.vocab else None
    bank = load_bank(args.bank)[0] if args.bank else None
    with _open(args, read_only=True) as library:
        _say(f"writing the report of {library.path}")
        out = write_report(library, bundle, args.out, args.query or DEFAULT_QUERIES, k=args.k, vocab=vocab, bank=bank)
    print(out.resolve())
    return 0


def cmd_demo(args) -> int:
    from core.library.indexer import index_paths
    from core.library.report import write_report
    from core.library.store import Library
    from core.library.tagging import caption_library, tag_library
    from core.runtime import PointEncoder

    bundle = _bundle(args)
    encoder = PointEncoder(bundle, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    with Library(args.out / "library.sqlite") as library:
        _say(f"1/4 indexing {', '.join(map(str, args.paths))} into {library.path}")
        with bar("indexing", "file", enabled=not args.quiet) as on_progress:
            done = index_paths(args.paths, library, encoder, workers=args.workers, on_progress=on_progress)
        _say(f"    {done.added} added, {done.updated} updated, {done.unchanged} unchanged, "
             f"{len(done.failed)} failed (listed in the report)")
        _say(f"2/4 tagging with the {args.vocab} vocabulary")
        vocab, _ = tag_library(library, bundle, args.vocab, k=_TAGS_K)
        _say("3/4 captioning from the " + (args.bank or "shipped") + " caption bank")
        bank, _ = caption_library(library, bundle, args.bank, k=1)
        queries = args.query or DEFAULT_QUERIES
        _say(f"4/4 searching {len(queries)} queries and writing the page")
        out = write_report(library, bundle, args.out / "report.html", queries, k=args.k, vocab=vocab, bank=bank)
    print(out.resolve())
    if done.failed:  # the page is written, but the run was not clean: exit as index does
        _say(f"{len(done.failed)} files could not be read (their reasons are in the report); exit code 1")
    return 1 if done.failed else 0


_TAGS_K = 3  # tags per asset in the demo: what a card has room for


# -- parsers ----------------------------------------------------------------------------

def register(sub) -> None:
    def add(name, func, help, epilog, json=True, db=True, bundle=True):
        p = add_command(sub, name, func, help, epilog=epilog)
        if db:
            p.add_argument("--db", type=Path, default=None, help=_DB_HELP)
        if bundle:
            p.add_argument("--bundle", type=Path, default=None, help=_BUNDLE_HELP)
        if json:
            p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = add("index", cmd_index, "add asset folders to a library: embed, preview and remember every mesh",
            "Walks the folders for glb, gltf, obj, ply, stl and off files, and .blend/.fbx/.usd* (read by\n"
            "headless Blender workers). Files seen before are skipped unless their size or mtime\n"
            "changed and their content hash too; deleted files are dropped; bad files are recorded\n"
            "with their reason and the run goes on (exit code 1 if any failed this run). Later runs\n"
            "skip the files that failed by their own fault (unreadable, corrupt, no geometry) until\n"
            "they change, and retry those that failed by the run's (out of memory, a worker killed\n"
            "by the system, a full disk); --retry-failed retries them all.\n"
            "Every batch is committed on its own: stop it at any time and run it again to resume.\n\n"
            "examples:\n"
            "  ulip2 index ~/assets/props ~/assets/furniture --bundle my-bundle\n"
            "  ulip2 index ~/assets --db studio.sqlite        (run again: only changes are redone)\n"
            "  RAY_ADDRESS=ray://farm:10001 ulip2 index /mnt/assets --db studio.sqlite --engine ray")
    p.add_argument("paths", nargs="+", metavar="PATH", help="asset folders or single mesh files")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the encoder runs")
    p.add_argument("--workers", type=int, default=None, help=_LOADERS_HELP)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="load files in this machine's loaders and Blender workers (default), or as Ray tasks on "
                        "the cluster at $RAY_ADDRESS (a local Ray without it), each file read by one task; this "
                        "process still encodes and writes. Every node needs ulip2 (and ulip2[blender] for "
                        "Blender's formats) and must see the asset paths")
    p.add_argument("--batch-size", type=positive_int, default=16, help="assets per encoder batch and per commit (default 16)")
    p.add_argument("--seed", type=int, default=0, help="point sampling seed (default 0)")
    p.add_argument("--thumbnails", choices=("points", "blender", "none"), default="points",
                   help="points (default): fast previews of the sampled points for what trimesh reads, renders "
                        "for what Blender reads; blender: then render the rest as 'ulip2 thumbnails' does; none")
    p.add_argument("--no-thumbnails", dest="thumbnails", action="store_const", const="none",
                   help="the same as --thumbnails none")
    p.add_argument("--retry-failed", action="store_true",
                   help="read again the unchanged files that failed before (skipped otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("thumbnails", cmd_thumbnails, "replace the point previews of a library with Blender renders",
            "'ulip2 index' previews the files trimesh reads (glb, gltf, obj, ply, stl, off) by\n"
            "drawing their sampled points, to index tens of assets a second; the files only Blender\n"
            "reads (.blend, .fbx, .usd*) are rendered already. This renders the others in headless\n"
            "Blender workers (Workbench, 128 px, transparent background; each asset marked in a\n"
            ".blend on its own), a few assets a second per worker. Each file is committed when\n"
            "done: stop it at any time and run it again to resume; assets rendered already are\n"
            "skipped. A file Blender cannot import, or that changed since indexing, keeps its\n"
            "preview and is listed with the reason (exit code 1); .off files keep theirs (Blender\n"
            "has no importer for them). Needs the blender extra: pip install 'ulip2[blender]'.\n\n"
            "examples:\n"
            "  ulip2 thumbnails                        (the library in ./ulip2-library.sqlite)\n"
            "  ulip2 thumbnails --db studio.sqlite --workers 4\n"
            "  ulip2 index ~/assets --thumbnails blender   (index, then this, in one command)",
            bundle=False)
    p.add_argument("--workers", type=int, default=None, help="Blender worker processes (default: one per CPU)")
    p.add_argument("--redo", action="store_true", help="render every asset again, rendered ones included")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("search", cmd_search, "find assets by text, by an example mesh (--like) or by a photo (--image)",
            "Scores are cosine similarities in the bundle's space; only embeddings made by this\n"
            "bundle are searched. Libraries from 50,000 assets up use an approximate index (faiss\n"
            "IVF) kept beside the library file and rebuilt when the library changed.\n\n"
            "examples:\n"
            "  ulip2 search \"a wooden chair with armrests\"\n"
            "  ulip2 search --like props/lamp.glb --k 5          (an indexed asset or any mesh file)\n"
            "  ulip2 search --like sets/kitchen.blend#Kettle     (an asset marked inside a .blend)\n"
            "  ulip2 search --image photo.jpg                    (spaces with an image tower only)\n"
            "  ulip2 search \"lamp\" --format glb --folder ~/assets/props --tag lamp --json")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("text", nargs="?", help="what to look for, in words")
    query.add_argument("--like", metavar="ASSET_OR_MESH", help="find assets that look like this mesh")
    query.add_argument("--image", metavar="PHOTO", help="find assets that look like this image")
    p.add_argument("--k", type=positive_int, default=10, help="how many results (default 10)")
    p.add_argument("--format", type=asset_format, action="append",
                   help="only this file format (e.g. glb); repeat for several")
    p.add_argument("--folder", help="only assets under this folder")
    p.add_argument("--tag", action="append", help="only assets tagged so by 'ulip2 tag'; repeat to need several")
    p.add_argument("--space", help="refuse the search unless the bundle's space is this one")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where --like meshes are embedded")

    p = add("tag", cmd_tag, "zero-shot tags for every asset from a vocabulary of class names",
            "Each label is embedded once as the average of ULIP's 64 prompt templates (\"a point\n"
            "cloud model of {}.\", ...); an asset gets its k best labels with a cosine score at or\n"
            "above --threshold. Tags are stored in the library (for 'search --tag') and replace\n"
            "earlier tags of the same vocabulary.\n\n"
            "vocabularies: lvis (Objaverse-LVIS, 1,156 categories), modelnet40 (40), shapenet55 (55),\n"
            "or a text file with one label per line.\n\n"
            "examples:\n"
            "  ulip2 tag --vocab modelnet40 --k 3\n"
            "  ulip2 tag --vocab my-labels.txt --threshold 0.2 --export tags.csv")
    p.add_argument("--vocab", default="lvis", help="lvis, modelnet40, shapenet55 or FILE (default lvis)")
    p.add_argument("--k", type=positive_int, default=5, help="labels per asset at most (default 5)")
    p.add_argument("--threshold", type=float, default=0.0, help="lowest cosine score kept (default 0.0)")
    p.add_argument("--export", type=Path, help="also write the tags to FILE.csv or FILE.json")

    p = add("caption", cmd_caption, "caption every asset by retrieval from a caption bank",
            "Retrieval, not generation: each asset gets the k sentences of the bank nearest to it in\n"
            "the bundle's space, with their cosine scores. Without --bank, a small bank shipped with\n"
            "ulip2 (short descriptions of common assets); a bank is a text file, one caption a line.\n\n"
            "examples:\n"
            "  ulip2 caption --k 1\n"
            "  ulip2 caption --bank studio-captions.txt --export captions.json")
    p.add_argument("--bank", help="caption file, one per line (default: the shipped bank)")
    p.add_argument("--k", type=positive_int, default=3, help="captions per asset (default 3)")
    p.add_argument("--export", type=Path, help="also write the captions to FILE.csv or FILE.json")

    p = add("report", cmd_report, "write a library as one HTML page: thumbnails, tags, captions, searches",
            "One self-contained file (previews inlined, nothing to fetch), to open in any browser or\n"
            "send to someone: a header (library, bundle, space, counts), one section per --query with\n"
            "its top --k hits, every asset as a card with its preview, tags and caption, and the files\n"
            "that failed with their reasons. It shows what 'ulip2 tag' and 'ulip2 caption' stored;\n"
            "run them first (or use 'ulip2 demo', which does all of it).\n\n"
            "examples:\n"
            "  ulip2 report --out report.html\n"
            "  ulip2 report --db studio.sqlite --out report.html --query \"a red armchair\" \"a desk lamp\"",
            json=False)
    p.add_argument("--out", type=Path, required=True, metavar="FILE.html", help="where to write the page")
    _report_args(p)
    p.add_argument("--vocab", help="show only tags of this vocabulary (default: every one stored)")
    p.add_argument("--bank", help="show only captions of this caption bank (default: every one stored)")

    p = add("demo", cmd_demo, "index, tag, caption and search a folder in one go, ending with an HTML report",
            "The whole main job on any folder of meshes: indexes PATH into OUT/library.sqlite (run\n"
            "again: only changes are redone), tags every asset from a vocabulary, captions it by\n"
            "retrieval from a caption bank, runs a few text searches, writes OUT/report.html and\n"
            "prints its path. Offline. Progress goes to stderr; bad files are listed in the report.\n\n"
            "examples:\n"
            "  ulip2 demo examples/*.glb --out demo\n"
            "  ulip2 demo ~/assets/furniture --out furniture-demo --query \"a wooden chair\" \"a bed\"\n"
            "  (Debian/Ubuntu: Sweet Home 3D's furniture, fetched with apt-get and unpacked from its\n"
            "  .sh3f catalogues into DIR/models/ by the training recipe, makes a sample library)\n"
            "  python -m training.recipes.sweethome3d prepare --out /tmp/sh3d\n"
            "  ulip2 demo /tmp/sh3d/models --out sh3d-demo",
            json=False, db=False)  # the library is OUT/library.sqlite, beside the page
    p.add_argument("paths", nargs="+", metavar="PATH", help="asset folders or single mesh files")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for library.sqlite and report.html (made if missing)")
    _report_args(p)
    # modelnet40, not tag's lvis: 40 labels embed in seconds on a CPU, LVIS's 1,156 (x 64
    # prompt templates) take minutes on a fresh machine, and the demo is meant to be quick.
    p.add_argument("--vocab", default="modelnet40",
                   help="tag vocabulary: modelnet40, lvis, shapenet55 or FILE (default modelnet40: quick)")
    p.add_argument("--bank", help="caption file, one per line (default: the shipped bank)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the encoder runs")
    p.add_argument("--workers", type=int, default=None, help=_LOADERS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar while indexing")


def _report_args(p) -> None:
    p.add_argument("--query", action="extend", nargs="+", metavar="TEXT",
                   help="text searches to show (default: " + ", ".join(f'"{q}"' for q in DEFAULT_QUERIES) + ")")
    p.add_argument("--k", type=positive_int, default=5, help="hits per search (default 5)")
