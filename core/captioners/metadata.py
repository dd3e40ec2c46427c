"""The metadata captioner: NOT a vision model.

It writes sentences from what is known and measured about an object, never from what a
model sees in the renders: cleaned object and material names, the dominant colours
counted in each render's opaque pixels, proportions and size from the world-space
dimensions Blender measured. Records it captions say "vision_model": false. Use it to
build a store offline; recaption with blip2 when its weights are at hand.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from core.captioners.base import Captioner

# Hue bins (upper bound in degrees, name) for saturated pixels; shading keeps hue, so a
# lit red cube stays red where nearest-RGB naming would call its dark side brown.
HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (195, "cyan"), (255, "blue"),
        (290, "purple"), (345, "pink"), (360, "red"))
# A colour is named when it covers at least this share of the object's pixels.
MIN_SHARE = 0.2


def colour_names(hsv: np.ndarray) -> np.ndarray:
    """A colour name per pixel from (n, 3) HSV values in 0..255 (PIL's HSV mode)."""
    hue, sat, val = hsv[:, 0] * (360 / 256), hsv[:, 1] / 255, hsv[:, 2] / 255
    bounds, names = zip(*HUES)
    names = np.array(names, dtype=object)[np.searchsorted(bounds, hue, side="right").clip(0, len(HUES) - 1)]
    names[(names == "orange") & (val < 0.6)] = "brown"
    grey = np.select([val > 0.85, val > 0.6, val > 0.35], ["white", "light grey", "grey"], "dark grey")
    names = np.where(sat < 0.2, grey, names)
    return np.where(val < 0.15, "black", names)


def dominant_colours(image, max_colours: int = 2) -> list[str]:
    """Names of the colours covering >= MIN_SHARE of the opaque pixels, commonest first."""
    rgba = image.convert("RGBA")
    opaque = np.asarray(rgba.getchannel("A")).reshape(-1) > 127
    if not opaque.any():
        return []
    hsv = np.asarray(rgba.convert("RGB").convert("HSV"), dtype=np.float32).reshape(-1, 3)[opaque]
    # Counted by hashing: np.unique would sort the object array of names, 10x slower.
    counts = Counter(colour_names(hsv).tolist())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # commonest, then by name
    return [name for name, count in ranked[:max_colours] if count / opaque.sum() >= MIN_SHARE]


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
        """At most k distinct sentences per image, from facts and the image's colours. A fact
        "size_known": False (extents in units that are not metres: a game's) leaves out the
        sentence of size and height; proportions do not depend on the unit."""
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
            sentences = [f"a {colour} {noun}", f"a 3D model of a {proportion} {colour} {noun}"]
            if facts.get("size_known", True):
                sentences.append(f"a {size} {colour} {noun}, about {height:.2g} m tall")
            sentences.append(f"a {proportion} {noun}")
            if materials:
                sentences.append(f"a {colour} {noun} made of {' and '.join(materials[:2])}")
            if len(objects) > 1:
                sentences.append(f"a {colour} object made of parts: {', '.join(objects[:4])}")
            out.append(list(dict.fromkeys(sentences))[:k])
        return out
