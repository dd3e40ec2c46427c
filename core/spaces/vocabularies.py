"""The words the text side works with, kept as data under core/data/: ULIP's prompt
templates, the shipped vocabularies (tag sets) and the caption bank, or a user's own
file of either, one entry per line.

`ULIP_TEMPLATES` is ULIP's 64-template ensemble ("modelnet40_64" in ULIP's
data/templates.json, used for its ModelNet40 and Objaverse-LVIS zero-shot numbers),
copied verbatim, including one template that lacks its final period, so class prompts
match the published setup. Vocabularies: Objaverse-LVIS's 1,156 categories, ModelNet40's
40, ShapeNet's 55.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from core.errors import VocabularyError

VOCABULARIES = ("lvis", "modelnet40", "shapenet55")
DEFAULT_VOCABULARY = "lvis"
SHIPPED_BANK = "captions"


def _load_templates(key: str) -> tuple[str, ...]:
    """The template list stored under `key` in core/data/templates.json."""
    text = resources.files("core").joinpath("data", "templates.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)[key])


ULIP_TEMPLATES: tuple[str, ...] = _load_templates("ulip_64")


def _read_lines(text: str) -> list[str]:
    """Non-empty stripped lines, '#' comments skipped, duplicates dropped (order kept)."""
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def _text_list(name: str | os.PathLike, shipped: Sequence[str], what: str) -> tuple[str, list[str]]:
    """(source name, texts) of a shipped list under core/data/vocab/ or a user's file."""
    if str(name) in shipped:
        text = resources.files("core").joinpath("data", "vocab", f"{name}.txt").read_text(encoding="utf-8")
        return str(name), _read_lines(text)
    path = Path(name).expanduser()
    if not path.is_file():
        raise VocabularyError(f"no {what} {str(name)!r}: name a shipped one ({', '.join(shipped)}) or a text file, one per line")
    try:
        texts = _read_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise VocabularyError(f"{path}: not UTF-8 text ({exc})") from exc
    if not texts:
        raise VocabularyError(f"{path}: no {what} entries (one per line)")
    return str(path.resolve()), texts


def load_vocabulary(name: str | os.PathLike) -> tuple[str, list[str]]:
    """(vocabulary name, labels) for 'lvis', 'modelnet40', 'shapenet55' or a file path."""
    return _text_list(name, VOCABULARIES, "vocabulary")


def load_bank(name: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """(bank name, captions): the shipped bank, or a text file of captions, one per line."""
    return _text_list(name or SHIPPED_BANK, (SHIPPED_BANK,), "caption bank")


def prompt_name(label: str) -> str:
    """A label as it reads in a prompt, and as the report and the desktop app show it: LVIS
    writes 'bat_(animal)', a prompt says 'bat (animal)'."""
    return label.replace("_", " ")
