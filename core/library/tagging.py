"""Zero-shot tags and retrieval captions: the texts nearest to each asset in the bundle's space.

Tags: class names of a vocabulary (shipped: Objaverse-LVIS's 1,156 categories, ModelNet40's
40, ShapeNet's 55; or a file of the user's, one label per line), each embedded once as an
ensemble of ULIP's 64 prompt templates (Space.embed_prompts; the text cache keeps them),
scored by cosine similarity; the top k at or above a threshold are kept.

Captions: retrieval, not generation. Every sentence of a caption bank (shipped, or a text
file) is embedded as it is; an asset's captions are the bank's nearest sentences, with
their scores. A caption can only ever be a sentence already in the bank.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.library.keys import bundle_id
from core.library.store import Library, LibraryError
from core.spaces.ranking import nearest_texts
from core.spaces.vocabularies import DEFAULT_VOCABULARY, load_bank, load_vocabulary, prompt_name


def _label_assets(library: Library, bundle, table: str, source: str, text_vectors: np.ndarray,
                  texts: Sequence[str], k: int, threshold: float | None) -> dict[int, list[tuple[str, float]]]:
    """Score every asset of `bundle` against the texts and store the result in `table`."""
    bid = bundle_id(bundle)
    ids, vectors = library.embeddings(bid)
    if not len(ids):
        raise LibraryError(f"{library.path} has no assets embedded with bundle {bundle.path}; run: ulip2 index FOLDER")
    labels = dict(zip(ids.tolist(), nearest_texts(vectors, text_vectors, texts, k, threshold)))
    library.replace_labels(table, source, bid, labels.items())
    return labels


def tag_library(library: Library, bundle, vocabulary: str | os.PathLike = DEFAULT_VOCABULARY, *, k: int = 5,
                threshold: float = 0.0, on_progress=None) -> tuple[str, dict[int, list[tuple[str, float]]]]:
    """Tag every asset of `bundle` in `library` with its top-k labels; returns (vocab, tags).
    on_progress(done, total) follows the vocabulary's classes being embedded (minutes for LVIS
    on a CPU the first time; cached texts cost nothing)."""
    from core.spaces import prompt_vectors

    name, labels = load_vocabulary(vocabulary)
    class_vectors = prompt_vectors(bundle, [prompt_name(label) for label in labels], on_progress=on_progress)
    return name, _label_assets(library, bundle, "tags", name, class_vectors, labels, k, threshold)


def caption_library(library: Library, bundle, bank: str | os.PathLike | None = None, *,
                    k: int = 3) -> tuple[str, dict[int, list[tuple[str, float]]]]:
    """Give every asset of `bundle` its k nearest bank captions; returns (bank, captions)."""
    from core.spaces import text_encoder

    name, captions = load_bank(bank)
    caption_vectors = text_encoder(bundle).embed_text(captions)
    return name, _label_assets(library, bundle, "captions", name, caption_vectors, captions, k, None)


def export_labels(library: Library, labels: dict[int, list[tuple[str, float]]], out: str | os.PathLike,
                  kind: str = "tag") -> Path:
    """Write {asset id: [(text, score)]} as CSV (path, rank, <kind>, score) or JSON ({path: [...]})."""
    out = Path(out)
    paths = {i: row["path"] for i, row in library.assets(list(labels)).items()}
    ordered = sorted((paths[i], rows) for i, rows in labels.items() if i in paths)
    if out.suffix.lower() == ".json":
        data = {path: [{kind: text, "score": score} for text, score in rows] for path, rows in ordered}
        out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elif out.suffix.lower() == ".csv":
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "rank", kind, "score"])
            for path, rows in ordered:
                writer.writerows([path, rank, text, score] for rank, (text, score) in enumerate(rows, 1))
    else:
        raise LibraryError(f"{out}: export to a .csv or .json file")
    return out
