"""Asset libraries: an incremental index of asset folders in SQLite, with search by text,
image or 3D example, zero-shot tags, retrieval captions and thumbnails.

    store.py       the SQLite file (schema, one transaction per batch)
    indexer.py     walk, skip unchanged, load in parallel, embed in batches
    search.py      queries -> vectors -> top-k (exact, or ann.py's faiss index when large)
    tagging.py     vocabularies and caption banks -> tags and captions
    thumbnails.py  point previews as PNG, and Blender renders replacing them (ulip2 thumbnails)
    cli.py         ulip2 index | thumbnails | search | tag | caption | report | demo

Light to import: torch loads only when a space embeds text, onnxruntime only in the encoder.
"""
