"""Captions for a triplet store's records: each view's K candidates from a captioner, ranked
by a frozen space, the best kept (ULIP-2's recipe). Runs in the ulip2 environment (torch,
PIL), once core.triplets.build has written the views."""

from __future__ import annotations

from core.progress import OnProgress, ShouldStop, never
from core.triplets.store import TripletStore


def load_captioning(captioner: str, model: str | None, space: str, device: str) -> tuple:
    """(captioner, space) by name, loaded before any work so that a missing model fails first."""
    from core.captioners import load_captioner
    from core.spaces import load_space

    return load_captioner(captioner, model, device=device), load_space(space, device)


def caption_store(store: TripletStore, captioner, space, *, k: int, recaption: bool = False,
                  library: dict[str, dict] | None = None, on_progress: OnProgress | None = None,
                  should_stop: ShouldStop = never) -> int:
    """Caption the store's uncaptioned records (all of them with recaption); returns how many
    were captioned now. Each record's captions are committed as made, so a stop (should_stop,
    a kill) keeps them and the next run captions the rest.

    library: what a studio library knows of an asset, by record key: {"facts": {...}, "texts":
    [str]}. Its facts (a name, real dimensions in metres) replace what the file gave (its
    stem, extents in unknown units) for the captioner; its texts (names, tags) are kept
    beside the per-view captions.
    """
    from core.captioners import caption_views

    library = library or {}
    records = list(store.records(captioned=None if recaption else False))
    if on_progress is not None:
        on_progress(0, len(records))
    for done, record in enumerate(records, 1):
        known = library.get(record.key, {})
        facts = {**(record.meta.get("facts") or {}), **known.get("facts", {})}
        block = caption_views(captioner, space, record.views(), k=k, facts=facts)
        if known.get("texts"):
            block["texts"] = list(known["texts"])
        store.set_captions(record.key, block)
        if on_progress is not None:
            on_progress(done, len(records))
        if should_stop():
            return done
    return len(records)
