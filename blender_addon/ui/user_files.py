"""Folders the extension writes to: inside Blender's user folder for this extension, as
extensions must (nothing written elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from .preferences import ADDON


def user_folder(name: str) -> Path:
    """A folder of this extension's user data (created if missing)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON, path=name, create=True))
    except ValueError:
        # Enabled as a plain add-on (the source tree in tests, the headless worker): no
        # extension folder exists, so use ulip2's own cache folder.
        from core.paths import cache_dir

        folder = cache_dir() / "blender" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


_CACHE_ENV = "ULIP2_CACHE_DIR"
_set_here = False  # whether keep_caches_in_user_folder chose the cache folder


def keep_caches_in_user_folder() -> None:
    """Point ulip2's cache (text vectors of vocabularies and captions) into the extension's
    user folder, unless the user chose a folder with ULIP2_CACHE_DIR."""
    global _set_here
    if not os.environ.get(_CACHE_ENV):
        os.environ[_CACHE_ENV] = str(user_folder("cache"))
        _set_here = True


def child_environment() -> dict:
    """The environment for a ulip2 process started from Blender: its caches stay its own."""
    env = dict(os.environ)
    if _set_here:
        env.pop(_CACHE_ENV, None)
    return env
