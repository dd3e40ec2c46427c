"""The `ulip2` commands, one module per part of the product, each thin over its library:
it reads arguments, draws progress (core.progress.bar) and prints what was done.

    models     embed, export, models, info          core.bundle, core.runtime, core.export
    library    index, search, tag, caption, ...     core.library
    triplets   triplets build|caption|info          core.triplets
    blender    blender tag|build-extension          blender_addon
    train      features, train, eval, retrain       training
    app        app                                  gui

Each module's register(sub) adds its subparsers and stays light to import (torch, bpy and
Qt load inside the commands). cli/main.py assembles them and runs one.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_command(sub, name: str, func, help: str, *, description: str | None = None, **kw) -> argparse.ArgumentParser:
    """The subcommand `name` running func(args): its --help says `description` (else
    `help`) and its epilog as written, line breaks kept."""
    p = sub.add_parser(name, help=help, description=description or help,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.set_defaults(func=func)
    return p


def print_json(obj) -> None:
    """What a command did, as JSON on stdout (paths print as written)."""
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
