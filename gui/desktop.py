"""Handing an asset to the rest of the desktop: its folder in the file manager, the asset in
Blender. Qt-free: each function builds the command that would run, so it is tested with fake
programs on PATH, and `launch` starts it without waiting (the app stays responsive)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from blender_addon.scene.importers import IMPORTERS
from core.errors import Ulip2Error

#: Where Blender's installers put it when it is not on PATH (a pattern's matches are tried in
#: reverse name order: usually the newest version first).
COMMON_BLENDER_PATHS = (
    "/Applications/Blender.app/Contents/MacOS/Blender",
    "C:/Program Files/Blender Foundation/Blender */blender.exe",
    "/snap/bin/blender",
    "/opt/blender*/blender",
    "~/blender*/blender",
    "/usr/local/bin/blender",
)

class DesktopError(Ulip2Error):
    """A program to hand an asset to is missing or cannot take it."""


def find_blender(setting: str = "", candidates=COMMON_BLENDER_PATHS) -> str:
    """The Blender to open assets in: the one set in Settings, else `blender` on PATH, else
    the first of the usual install places that exists."""
    if setting:
        path = os.path.expanduser(setting)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise DesktopError(f"the Blender set in File → Settings is not a program: {setting}")
    found = shutil.which("blender")
    if found:
        return found
    for pattern in candidates:
        for path in sorted(glob.glob(os.path.expanduser(pattern)), reverse=True):
            if os.access(path, os.X_OK):
                return path
    raise DesktopError("Blender was not found: set its program in File → Settings, or put `blender` on PATH")


def blender_command(blender: str, asset: str) -> list[str]:
    """argv that opens `asset` in Blender: a .blend as it is, other formats imported by
    Blender's own importer into an empty scene."""
    extension = os.path.splitext(asset)[1].lower()
    if extension == ".blend":
        return [blender, asset]
    if extension not in IMPORTERS:
        raise DesktopError(f"Blender has no importer for {extension} files: {os.path.basename(asset)}")
    module, operator = IMPORTERS[extension]
    script = (f"import bpy; bpy.ops.wm.read_homefile(use_empty=True); "
              f"bpy.ops.{module}.{operator}(filepath={asset!r})")
    return [blender, "--python-expr", script]


def reveal_command(asset: str) -> list[str] | None:
    """argv that shows `asset` in the platform's file manager (selected, where the platform
    can); None where Qt's QDesktopServices must open the folder instead."""
    if sys.platform == "darwin":
        return ["open", "-R", asset]
    if sys.platform == "win32":
        return ["explorer", f"/select,{asset}"]
    xdg_open = shutil.which("xdg-open")
    return [xdg_open, os.path.dirname(asset)] if xdg_open else None


def launch(argv: list[str]) -> subprocess.Popen:
    """Start argv detached from the app (its own session, no output kept): closing the app
    leaves Blender open."""
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise DesktopError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
