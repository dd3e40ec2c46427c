"""The library as one HTML page: thumbnails, tags, captions, a few searches, failed files.

A single self-contained file (thumbnails inlined as base64 PNG, CSS in the page, no
script), so it can be mailed, attached to a ticket or opened from a shared drive with
nothing beside it. Every text taken from the library (file names, tags, captions,
error reasons) is HTML-escaped: asset names come from anyone's disk.
"""

from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Sequence
from pathlib import Path

from core.bundle import Bundle
from core.library.indexer import bundle_id
from core.library.store import Library
from core.spaces.vocabularies import prompt_name

#: Cards in the library grid at most: past this the page gets slow to open, and a person
#: browses a library this size with `ulip2 search`, not by scrolling.
MAX_GRID_ASSETS = 1000
_TAGS_PER_CARD = 3

_CSS = """
:root { --ink: #1d2430; --muted: #667085; --line: #e4e7ec; --card: #fff; --page: #f5f6f8; --accent: #2f6fdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: var(--page); }
main { max-width: 1160px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 4px; }
h2 .query { color: var(--accent); }
.note { color: var(--muted); margin: 0 0 12px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; color: var(--muted); }
.facts dd { margin: 0; color: var(--ink); word-break: break-all; }
.counts { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.count { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; }
.count b { display: block; font-size: 20px; }
.warning { background: #fff4e5; border: 1px solid #f5b041; color: #7a4100; border-radius: 8px;
           padding: 12px 16px; margin: 16px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.hits { grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px;
        display: flex; flex-direction: column; gap: 4px; min-width: 0; }
/* height: auto beats the img's height attribute, which would stretch a wide card's preview */
.card img, .card .noimg { width: 100%; height: auto; aspect-ratio: 1; object-fit: contain; border-radius: 4px;
                          background: #ececec; }
nav a { color: var(--accent); margin-right: 16px; }
.card .noimg { display: flex; align-items: center; justify-content: center; color: var(--muted); }
.name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.meta { color: var(--muted); font-size: 12px; }
.rank { float: right; color: var(--muted); font-weight: 400; }
.tags { display: flex; flex-wrap: wrap; gap: 4px; }
.tag { background: #eaf1fd; color: #1b4fa8; border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.tag small, .caption small { color: var(--muted); }
.caption { font-size: 12px; font-style: italic; }
.failed { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 16px; }
.failed li { margin: 6px 0; }
.failed code { word-break: break-all; }
.reason { color: #a4262c; }
footer { color: var(--muted); margin-top: 32px; font-size: 12px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return '<div class="noimg">no preview</div>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" width="128" height="128">'


def _tag_chips(tags: list[tuple[str, float]]) -> str:
    chips = "".join(f'<span class="tag">{_e(prompt_name(t))} <small>{s:.2f}</small></span>'
                    for t, s in tags[:_TAGS_PER_CARD])
    return f'<div class="tags">{chips}</div>' if chips else '<div class="meta">no tags</div>'


def _caption(captions: list[tuple[str, float]]) -> str:
    if not captions:
        return '<div class="meta">no caption</div>'
    text, score = captions[0]
    return f'<div class="caption">“{_e(text)}” <small>{score:.2f}</small></div>'


def write_report(library: Library, bundle: Bundle, out_html: str | os.PathLike,
                 queries: Sequence[str], *, k: int = 5, vocab: str | None = None,
                 bank: str | None = None, max_assets: int = MAX_GRID_ASSETS) -> Path:
    """Write the report of `library` as seen through `bundle` to `out_html`; returns its path.

    queries: text searches shown with their top-k hits (cosine scores in the bundle's space).
    vocab, bank: the tag vocabulary and caption bank whose labels to show, as stored
    (tag_library / caption_library return the names); None shows every one the library holds.
    """
    from core.library.search import Searcher

    bid = bundle_id(bundle)
    assets = library.assets()
    embedded = set(library.embeddings(bid)[0].tolist())
    tags = library.asset_tags(bid, vocab)  # a person's tags first, then the vocabulary's
    captions = library.labels("captions", bid, bank)
    errors = library.errors()

    # Named after the folder the assets share (what a person indexed), not the database file.
    title = os.path.commonpath([row["folder"] for row in assets.values()]) if assets else library.path.name
    parts = [f"<h1>Asset library: {_e(title)}</h1>"]
    if not bundle.trained:
        parts.append(
            '<div class="warning" role="alert"><b>Untrained model bundle (random weights).</b> '
            "Its embeddings carry no meaning, so the tags, captions and search results below are "
            "arbitrary: this page shows the mechanics, not the quality. Use a trained bundle "
            "(<code>ulip2 export --checkpoint CKPT</code>) for real results.</div>")
    parts.append(
        '<dl class="facts">'
        f"<dt>library</dt><dd>{_e(library.path.resolve())}</dd>"
        f"<dt>bundle</dt><dd>{_e(bundle.path)} ({_e(bid)})</dd>"
        f"<dt>space</dt><dd>{_e(bundle.space)} ({bundle.dim}-d)</dd>"
        f"<dt>written</dt><dd>{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</dd>"
        "</dl>")
    counts = [("assets", len(assets)), ("embedded by this bundle", len(embedded)), ("tagged", len(tags)),
              ("captioned", len(captions)), ("failed files", len(errors))]
    parts.append('<div class="counts">' + "".join(f'<div class="count"><b>{n}</b>{_e(what)}</div>'
                                                  for what, n in counts) + "</div>")

    parts.append('<nav>' + ('<a href="#searches">Searches</a>' if queries else '') + '<a href="#library">Library</a>'
                 f'<a href="#failed">Failed files ({len(errors)})</a></nav>')

    # Searches: the Searcher refuses a library with nothing from this bundle, so an empty
    # one (every file failed) gets a sentence instead of the sections.
    if queries and embedded:
        searcher = Searcher(library, bundle)
        parts.append('<div id="searches">')
        for query in queries:
            hits = searcher.search(searcher.text_vector(query), k)
            cards = "".join(
                f'<div class="card" title="{_e(h.path)}">{_img(library.thumbnail(h.asset_id), os.path.basename(h.path))}'
                f'<div class="name"><span class="rank">#{rank}</span>{_e(os.path.basename(h.path))}</div>'
                f'<div class="meta">score {h.score:.3f}</div></div>'
                for rank, h in enumerate(hits, 1))
            parts.append(f'<section class="search"><h2>Search: <span class="query">“{_e(query)}”</span></h2>'
                         f'<p class="note">top {len(hits)} by cosine similarity to the text</p>'
                         f'<div class="grid hits">{cards}</div></section>')
        parts.append("</div>")
    elif queries:
        parts.append('<h2 id="searches">Searches</h2><p class="note">No asset of this library is embedded by this bundle, '
                     "so there is nothing to search.</p>")

    shown = list(assets.items())[:max_assets]
    parts.append(f'<section class="library" id="library"><h2>The library ({len(assets)} assets)</h2>'
                 '<p class="note">Tags are zero-shot (the vocabulary labels nearest to each asset). '
                 "Captions are retrieval from a caption bank, not generated text: each is the bank's "
                 "sentence nearest to the asset. Scores are cosine similarities.</p>")
    if len(shown) < len(assets):
        parts.append(f'<p class="note">Showing the first {len(shown)} by path; search finds the rest.</p>')
    cards = []
    for asset_id, row in shown:
        name = os.path.basename(row["path"])
        cards.append(f'<div class="card" title="{_e(row["path"])}">{_img(library.thumbnail(asset_id), name)}'
                     f'<div class="name">{_e(name)}</div><div class="meta">{_e(row["format"])} · '
                     f'{row["size"] / 1024:,.0f} KB</div>'
                     f"{_tag_chips(tags.get(asset_id, []))}{_caption(captions.get(asset_id, []))}</div>")
    parts.append(f'<div class="grid">{"".join(cards)}</div></section>')

    parts.append(f'<section class="errors" id="failed"><h2>Files that failed ({len(errors)})</h2>')
    if errors:
        items = "".join(f'<li><code>{_e(e["path"])}</code><br><span class="reason">{_e(e["reason"])}</span></li>'
                        for e in errors)
        parts.append(f'<ul class="failed">{items}</ul>')
    else:
        parts.append('<p class="note">None: every file was read.</p>')
    parts.append("</section><footer>Written by ulip2 report.</footer>")

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>ulip2 report: {_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
