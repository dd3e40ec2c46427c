"""The core calls the app's jobs run (gui.workers.Jobs), one function each, free of Qt so
they read (and test) like the CLI's commands. Each opens its own Library: a SQLite
connection belongs to the thread that made it, and the WAL journal lets a search read
while an index run writes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.library.search import Hit
from core.progress import never

#: Results a search or a browse shows: a screenful of thumbnails, not the whole library.
RESULTS_K = 60


@dataclass
class Results:
    """What the result grid shows: hits (score None when browsing), their thumbnails
    (PNG bytes, read here so the UI thread never waits on SQLite), and which bundle made them."""

    hits: list[Hit]
    thumbnails: dict[int, bytes] = field(default_factory=dict)
    bundle_id: str = ""
    space: str = ""
    query: str = ""  # what was asked, as the status bar says it
    tags: list[str] = field(default_factory=list)  # the tag filter these results passed
    tag_labels: list[str] = field(default_factory=list)  # every label a tag filter can use now
    # Whether the bundle's space embeds images, where this search loaded it (text and image
    # queries); an image query in a space without an image tower searches nothing.
    image_tower: bool | None = None
    total: int = 0  # assets the search ranked (or the browse listed): hits are the first RESULTS_K of them


@dataclass
class IndexOutcome:
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: list[dict]  # {path, reason} of this run
    cancelled: bool
    done: int  # files processed this run
    total: int  # files that needed work this run
    known_errors: int = 0  # unchanged files that failed in an earlier run by their own fault (skipped)


def run_index(folders: Sequence[str], db: str, bundle: str | None, device: str, *, batch_size: int = 16,
              workers: int | None = None, on_progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] = never) -> IndexOutcome:
    from core.library.indexer import index_paths
    from core.library.store import Library
    from core.runtime import PointEncoder

    encoder = PointEncoder(bundle, device=device)
    progress = [0, 0]

    def batch(done: int, total: int) -> None:
        progress[:] = done, total
        if on_progress is not None:
            on_progress(done, total)

    with Library(db) as library:
        report = index_paths(folders, library, encoder, batch_size=batch_size, workers=workers,
                             on_progress=batch, should_stop=should_stop)
    done, total = progress
    return IndexOutcome(report.added, report.updated, report.unchanged, report.removed, report.failed,
                        cancelled=done < total, done=done, total=total, known_errors=report.known_errors)


def run_thumbnails(db: str, *, workers: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] = never):
    """Blender renders for every asset that has only a point preview, through core's
    `ulip2 thumbnails` step (committed file by file: a cancelled run resumes); its report."""
    from core.library.store import Library
    from core.library.thumbnails import render_thumbnails

    with Library(db, create=False) as library:
        return render_thumbnails(library, workers=workers, on_progress=on_progress, should_stop=should_stop)


#: The two kinds of labels core stores, named as its exporter writes them.
TAG, CAPTION = "tag", "caption"


def run_labelling(db: str, bundle: str | None, kind: str, source: str, k: int) -> tuple[str, int]:
    """Tag (`source`: a vocabulary) or caption (`source`: a caption bank) every asset the bundle
    embedded, through core's tagger; (the source's name, assets labelled)."""
    from core.bundle import default_bundle_path, read_bundle
    from core.library.store import Library
    from core.library.tagging import caption_library, tag_library

    label = tag_library if kind == TAG else caption_library
    with Library(db, create=False) as library:
        name, labels = label(library, read_bundle(bundle or default_bundle_path()), source, k=k)
    return name, len(labels)


def export_labels(db: str, bundle: str | None, kind: str, out: str) -> int:
    """Every asset's tags (a person's first, then the bundle's zero-shot ones) or captions
    written to a .csv or .json file by core's exporter; the number of assets written."""
    from core.library.search import Searcher
    from core.library.store import Library
    from core.library.tagging import export_labels as write

    with Library(db, read_only=True) as library:
        bundle_id = Searcher(library, bundle).bundle_id
        labels = library.asset_tags(bundle_id) if kind == TAG else library.labels("captions", bundle_id)
        write(library, labels, out, kind=kind)
    return len(labels)


def _matching(searcher, tags: Sequence[str]) -> set[int]:
    """Ids of the assets a search ranks: the bundle's embedded ones carrying every tag."""
    ids = searcher.library.embedded_ids(searcher.bundle_id)
    return ids & set(searcher.library.filtered_ids(tags=tags)) if tags else ids


def _results(searcher, hits: list[Hit], query: str, tags: Sequence[str], total: int,
             image_tower: bool | None = None) -> Results:
    library = searcher.library
    thumbnails = {h.asset_id: png for h in hits if (png := library.thumbnail(h.asset_id)) is not None}
    return Results(hits, thumbnails, searcher.bundle_id, searcher.bundle.space, query, list(tags),
                   library.tag_labels(searcher.bundle_id), image_tower, total)


def run_search(db: str, bundle: str | None, device: str, *, text: str = "", like: str | None = None,
               image: str | None = None, tags: Sequence[str] = (), k: int = RESULTS_K) -> Results:
    """Text search, "find similar" (`like`: an asset's path; the asset itself is left out),
    search by an image file (spaces with an image tower), or, with none, the library's assets
    in path order (browsing, no scores); only assets carrying every one of `tags` (core's tag
    filter: zero-shot tags and a person's own)."""
    from core.library.search import Searcher
    from core.library.store import Library
    from core.spaces import has_image_tower

    with Library(db, read_only=True) as library:
        searcher = Searcher(library, bundle, device=device)
        ids = _matching(searcher, tags)
        if image is not None:
            query = f"image {os.path.basename(image)}"
            if not has_image_tower(searcher.bundle.space):
                return _results(searcher, [], query, tags, 0, image_tower=False)
            return _results(searcher, searcher.search(searcher.image_vector(image), k, tags=tags), query, tags,
                            len(ids), image_tower=True)
        if like is not None:
            vector, exclude = searcher.like_vector(like)
            return _results(searcher, searcher.search(vector, k, tags=tags, exclude=exclude),
                            f"like {os.path.basename(like)}", tags, len(ids - {exclude}))
        if text.strip():
            hits = searcher.search(searcher.text_vector(text.strip()), k, tags=tags)
            return _results(searcher, hits, text.strip(), tags, len(ids), has_image_tower(searcher.bundle.space))
        rows = [(i, row) for i, row in library.assets().items() if i in ids]
        hits = [Hit(i, row["path"], row["format"], row["folder"], float("nan")) for i, row in rows[:k]]
        return _results(searcher, hits, "", tags, len(rows))


@dataclass
class Details:
    """The details pane's facts of one asset."""

    asset_id: int
    path: str
    format: str
    size: int
    user_tags: list[str]
    suggested_tags: list[tuple[str, float]]  # zero-shot tags from `ulip2 tag`, best first
    caption: str | None


def asset_details(library, asset_id: int, bundle_id: str) -> Details | None:
    """The details of one asset, every row read by its id (never the bundle's every tag)."""
    rows = library.assets([asset_id])
    if asset_id not in rows:
        return None  # re-indexed or removed since the search
    row = rows[asset_id]
    user = library.user_tags([asset_id]).get(asset_id, [])
    suggested = [(label, score) for label, score in library.labels("tags", bundle_id, ids=[asset_id]).get(asset_id, [])
                 if label not in user]
    captions = library.labels("captions", bundle_id, ids=[asset_id]).get(asset_id, [])
    return Details(asset_id, row["path"], row["format"], row["size"], user, suggested,
                   captions[0][0] if captions else None)


def load_details(db: str, asset_id: int, bundle_id: str) -> Details | None:
    """What the details pane shows of the asset selected in the grid (None: gone since the search)."""
    from core.library.store import Library

    with Library(db, read_only=True) as library:
        return asset_details(library, asset_id, bundle_id)


def save_user_tags(db: str, asset_id: int, labels: Sequence[str]) -> list[str]:
    """A person's tags of one asset replaced by `labels`; them as core stored them."""
    from core.library.store import Library

    with Library(db, create=False) as library:
        return library.set_user_tags(asset_id, labels)
