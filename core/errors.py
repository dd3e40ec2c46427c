"""The error types core raises, each with a message a user can act on."""

from __future__ import annotations

import os


class Ulip2Error(Exception):
    """Base of every error ulip2 raises on purpose (the CLI prints these without a traceback)."""


class AssetError(Ulip2Error):
    """An asset file that cannot become points: empty, degenerate, not a mesh, or corrupt."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        where = self.path if self.path is not None else "<arrays>"
        super().__init__(f"{where}: {reason}")


class BundleError(Ulip2Error):
    """A model bundle that is missing, malformed, or does not fit the request."""


class SpaceError(Ulip2Error):
    """A frozen space that cannot be loaded or cannot do what was asked (e.g. images in a text-only space)."""


class CheckpointError(Ulip2Error):
    """A checkpoint whose keys or shapes do not match the encoder config."""


class VocabularyError(Ulip2Error):
    """A vocabulary or caption bank that is not shipped and not a readable file of entries."""
