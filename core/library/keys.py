"""The key a bundle's rows carry in a library (embeddings, tags, captions).

Standard library only, apart from reading the bundle, so readers of a library (search,
tagging, the Blender extension) need neither the indexer nor its mesh loaders (trimesh).
"""

from __future__ import annotations

from core.paths import file_sha256


def bundle_id(bundle) -> str:
    """`<config name>-<first 16 hex of the fp32 ONNX file's sha256>`: a re-export with other
    weights is another bundle even at the same path, and a moved bundle is the same one."""
    return f"{bundle.config.get('name', 'encoder')}-{file_sha256(bundle.onnx_path('fp32'))[:16]}"
