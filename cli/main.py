"""The `ulip2` command line."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import warnings

from cli import app, blender, library, models, serve, train, triplets
from core import __version__
from core.errors import Ulip2Error

DESCRIPTION = """\
ulip2: 3D assets -> embeddings in a vision-language space (ULIP-2), for tagging,
captioning and search of asset libraries.

A model bundle (a folder: ONNX encoder + bundle.json) turns a mesh into one vector in
a frozen space: 'minilm' (text, offline) or an open_clip space (text and images; ULIP-2
uses openclip:ViT-bigG-14:laion2b_s39b_b160k).
"""

EXAMPLES = """\
examples:
  ulip2 demo assets/ --out demo                   index, tag, caption, search: demo/report.html
  ulip2 index assets/ && ulip2 search "a wooden chair with armrests"
  ulip2 embed chair.glb --out chair.npy           one embedding per mesh (default bundle)
  ulip2 triplets build assets/ --store triplets --captioner metadata
  ulip2 train triplets --out runs/a --bundle bundles/mine
  ulip2 retrain studio-assets/ --out bundles/studio  fine-tune the default model on your assets
  ulip2 models pull ulip2-pointbert-10k --out ulip2-bundle      (needs network once)
  ulip2 models add-text default --out bundles/default-text     texts without torch (Blender)
  ulip2 blender tag props.blend --out props-tagged.blend        tag a .blend's marked assets headless

'ulip2 COMMAND --help' explains each command.
"""


# Modules that add subcommands (see build_parser).
COMMAND_MODULES = (models, library, triplets, blender, train, app, serve)


# -- parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ulip2", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ulip2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Each command module's register(sub) adds its subparsers (cli/__init__.py).
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _database_advice(exc: Exception, db) -> str:
    """One line for a SQLite error that reached the command line: what happened and the fix.
    What was committed before it stays (each batch is its own transaction)."""
    where = f"{db}: " if db else "the library: "
    text = str(exc)
    if "full" in text:
        return f"{where}the disk is full ({text}); free some space and run the command again: committed work is kept"
    if "malformed" in text or "not a database" in text:
        return (f"{where}the library file is damaged ({text}); restore it from a backup, or index the folders "
                "again into a new file with --db NEW")
    return f"{where}{text}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except Ulip2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # the library file, mid-run: a full disk, damage
        print(f"error: {_database_advice(exc, getattr(args, 'db', None))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a read-only folder, a full disk, a missing file named on the command line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and that it is writable", file=sys.stderr)
        return 1
    except MemoryError:  # a mesh too large for this machine (mesh readers let it through)
        print("error: out of memory; close other programs, or run this on a machine with more memory",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
