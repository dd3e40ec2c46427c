"""`ulip2 app`: the desktop app. Light to import: PySide6 loads only when the command runs,
so `ulip2 --help` and every other command work without it."""

from __future__ import annotations

from pathlib import Path

from cli import add_command


def cmd_app(args) -> int:
    from core.errors import Ulip2Error

    try:
        from gui.app import run
    except ImportError as exc:
        if "PySide6" not in str(exc):
            raise
        raise Ulip2Error("the desktop app needs PySide6: pip install 'ulip2[gui]'") from exc
    return run(args)


def register(sub) -> None:
    p = add_command(
        sub, "app", cmd_app, "the desktop app: index, search, browse, tag and caption asset libraries",
        description="The desktop app: add library folders, index them, search by text, image or example "
                    "with tag filters, browse thumbnails, edit tags, tag and caption with core's vocabularies, "
                    "export to CSV/JSON, open assets in Blender. Bundle, device, database and folders are "
                    "remembered.",
        epilog="examples:\n"
               "  ulip2 app\n"
               "  ulip2 app --library assets/ --query 'a chair'\n"
               "  QT_QPA_PLATFORM=offscreen ulip2 app --library examples --query 'a lamp' --screenshot docs/app.png")
    p.add_argument("--library", type=Path, action="append", default=None, metavar="DIR",
                   help="asset folder to show for this run (repeatable; the remembered folders otherwise)")
    p.add_argument("--db", type=Path, default=None, help="library file for this run (default: the remembered one)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder for this run (default: the remembered one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where the encoder runs")
    p.add_argument("--query", default=None, help="search for this text once the window is up")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE",
                   help="index the folders, run --query, save the window as FILE (PNG) and exit")
