"""The metadata captioner: NOT a vision model.

It writes sentences from what is known and measured about an object, never from what a
model sees in the renders: cleaned object and material names, the dominant colours
counted in each render's opaque pixels, proportions and size from the world-space
dimensions Blender measured. Records it captions say "vision_model": false. Use it to
build a store offline; recaption with blip2 when its weights are at hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from core.captioners import Captioner

# Named colours (sRGB 0..255) that renders are quantised to; greys are split by lightness.
PALETTE = {
    "black": (20, 20, 20), "dark grey": (70, 70, 70), "grey": (128, 128, 128), "light grey": (190, 190, 190),
    "white": (240, 240, 240), "red": (200, 30, 30), "orange": (230, 120, 30), "yellow": (230, 210, 40),
    "green": (50, 160, 60), "cyan": (40, 180, 200), "blue": (40, 70, 200), "purple": (130, 50, 170),
    "pink": (230, 120, 170), "brown": (120, 75, 40), "beige": (210, 190, 150),
}
_NAMES = list(PALETTE)
_RGB = np.array(list(PALETTE.values()), dtype=np.float32)
# A colour is named when it covers at least this share of the object's pixels.
MIN_SHARE = 0.2


def dominant_colours(image, max_colours: int = 2) -> list[str]:
    """Palette names of the colours covering >= MIN_SHARE of the opaque pixels, commonest first."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32).reshape(-1, 4)
    rgb = rgba[rgba[:, 3] > 127, :3]
    if len(rgb) == 0:
        return []
    nearest = np.argmin(((rgb[:, None, :] - _RGB[None]) ** 2).sum(axis=2), axis=1)
    share = np.bincount(nearest, minlength=len(_NAMES)) / len(rgb)
    order = np.argsort(-share)
    return [_NAMES[i] for i in order[:max_colours] if share[i] >= MIN_SHARE]


# Words exporters put in names that say nothing about the object.
GENERIC_WORDS = {"geometry", "mesh", "object", "default", "defaultmaterial", "material", "node", "model",
                 "untitled", "scene", "root", "group", "mat"}


def clean_name(name: str) -> str:
    """'Office_Chair.001' -> 'office chair'; numbers, codes and generic exporter words dropped."""
    name = re.sub(r"\.\d+$", "", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    words = [w for w in re.split(r"[\s_\-.]+", name.lower()) if w.isalpha() and w not in GENERIC_WORDS]
    return " ".join(words)


def shape_words(dimensions: Sequence[float]) -> tuple[str, str]:
    """(proportion, size) words from world-space x, y, z extents in metres."""
    x, y, z = (float(d) for d in dimensions)
    width = max(x, y)
    if z > 1.8 * width:
        proportion = "tall, narrow"
    elif width > 2.0 * max(min(x, y), z):
        proportion = "long"
    elif z < 0.35 * width:
        proportion = "flat"
    else:
        proportion = "compact"
    largest = max(x, y, z)
    size = "small" if largest < 0.3 else "large" if largest > 3.0 else "medium-sized"
    return proportion, size


class MetadataCaptioner(Captioner):
    name = "metadata"
    vision_model = False

    def caption(self, images: Sequence, k: int, *, facts: dict | None = None) -> list[list[str]]:
        """At most k distinct sentences per image, from facts and the image's colours."""
        facts = facts or {}
        objects = [n for n in dict.fromkeys(clean_name(n) for n in facts.get("object_names", [])) if n]
        materials = [n for n in dict.fromkeys(clean_name(n) for n in facts.get("material_names", [])) if n]
        # The record's name (file stem or Blender object name) first, then the single part's name.
        noun = clean_name(facts.get("name", "")) or (objects[0] if len(objects) == 1 else "object")
        proportion, size = shape_words(facts.get("dimensions") or (1.0, 1.0, 1.0))
        height = float((facts.get("dimensions") or (1.0, 1.0, 1.0))[2])
        out = []
        for image in images:
            colour = " and ".join(dominant_colours(image)) or "plain"
            sentences = [
                f"a {colour} {noun}",
                f"a 3D model of a {proportion} {colour} {noun}",
                f"a {size} {colour} {noun}, about {height:.2g} m tall",
                f"a {proportion} {noun}",
            ]
            if materials:
                sentences.append(f"a {colour} {noun} made of {' and '.join(materials[:2])}")
            if len(objects) > 1:
                sentences.append(f"a {colour} object made of parts: {', '.join(objects[:4])}")
            out.append(list(dict.fromkeys(sentences))[:k])
        return out
