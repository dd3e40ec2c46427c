"""Zero-shot tags and retrieval captions of Blender objects, and where they are kept.

Scoring is core's (core.spaces.ranking.nearest_texts: the texts nearest to an object's
embedding in the bundle's space). An object marked as an asset keeps its tags in
`asset_data.tags` and its caption in `asset_data.description`, where the Asset Browser
shows and searches them; any other object keeps them in custom properties.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import bpy

from core.errors import AssetError
from core.spaces.ranking import nearest_texts

TAGS_PROPERTY = "ulip2_tags"
CAPTION_PROPERTY = "ulip2_caption"


@dataclass
class Outcome:
    """What a labelling run did, for the operator's report."""

    total: int = 0
    labelled: dict = field(default_factory=dict)  # object name -> (tags, caption)
    skipped: list = field(default_factory=list)  # object names with nothing to sample
    stopped: bool = False


def label_objects(models, objects, outcome: Outcome, *, vocabulary: str | None = None, k: int = 5,
                  caption: bool = True) -> Iterator[tuple[int, int, str]]:
    """Steps (done, total, message): embed the vocabulary (when tagging) and the caption
    bank (when captioning), then each object in turn, writing its tags and caption.

    The depsgraph is taken afresh for each object: in a modal run the scene is evaluated
    again between steps."""
    if vocabulary is not None:
        yield from models.vocabulary(vocabulary)
    if caption:
        yield from models.bank()
    tags = models.text_set("vocabulary", vocabulary) if vocabulary is not None else None
    bank = models.text_set("bank", None) if caption else None
    objects = list(objects)
    outcome.total = len(objects)
    for done, obj in enumerate(objects):
        try:
            name = obj.name
        except ReferenceError:  # deleted while a modal run waited between steps
            continue
        yield done, len(objects), f"labelling {name}"
        try:
            vector = models.embed_objects(bpy.context.evaluated_depsgraph_get(), [obj])
        except AssetError:
            outcome.skipped.append(name)  # lights, cameras, empties without instances
            continue
        labels = [text for text, _ in nearest_texts(vector, tags.vectors, tags.texts, k)[0]] if tags else []
        text = nearest_texts(vector, bank.vectors, bank.texts, 1)[0][0][0] if bank else None
        if labels:
            write_tags(obj, labels)
        if text is not None:
            write_caption(obj, text)
        outcome.labelled[name] = (labels, text)


def write_tags(obj, labels) -> None:
    """Add `labels` to the object's tags; one already there is not added again."""
    if obj.asset_data is not None:
        for label in labels:
            obj.asset_data.tags.new(label, skip_if_exists=True)
    else:
        obj[TAGS_PROPERTY] = list(dict.fromkeys([*read_tags(obj), *labels]))


def write_caption(obj, caption: str) -> None:
    if obj.asset_data is not None:
        obj.asset_data.description = caption
    else:
        obj[CAPTION_PROPERTY] = caption


def read_tags(obj) -> list[str]:
    if obj.asset_data is not None:
        return [tag.name for tag in obj.asset_data.tags]
    return [str(tag) for tag in obj.get(TAGS_PROPERTY, [])]


def read_caption(obj) -> str:
    if obj.asset_data is not None:
        return obj.asset_data.description
    return str(obj.get(CAPTION_PROPERTY, ""))
