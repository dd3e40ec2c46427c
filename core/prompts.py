"""Prompt templates for zero-shot tagging, kept as data in core/data/templates.json.

`ULIP_TEMPLATES` is ULIP's 64-template ensemble ("modelnet40_64" in ULIP's
data/templates.json, used for its ModelNet40 and Objaverse-LVIS zero-shot numbers),
copied verbatim, including one template that lacks its final period, so class
prompts match the published setup.
"""

from __future__ import annotations

import json
from importlib import resources


def _load_templates(key: str) -> tuple[str, ...]:
    """The template list stored under `key` in core/data/templates.json."""
    text = resources.files("core").joinpath("data", "templates.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)[key])


ULIP_TEMPLATES: tuple[str, ...] = _load_templates("ulip_64")
