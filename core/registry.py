"""Released 3D encoder checkpoints: where their weights live, which config and space they fit.

One registry and one download path (huggingface_hub's cache), as open_clip's pretrained.py
does for image-text models.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import Ulip2Error
from .spaces import ULIP2_SPACE


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    description: str
    config: str
    space: str
    hf_repo: str
    hf_repo_type: str
    hf_file: str


RELEASES = {
    r.name: r
    for r in (
        Release(
            name="ulip2-pointbert-10k",
            description="ULIP-2 Point-BERT, 10k xyzrgb points, ViT-bigG-14 space, Objaverse + ShapeNet triplets",
            config="ulip2-pointbert",
            space=ULIP2_SPACE,
            hf_repo="SFXX/ulip",
            hf_repo_type="dataset",
            hf_file="ULIP-2/pretrained_models/ULIP-2-PointBERT-10k-xyzrgb-pc-vit_g-objaverse_shapenet-pretrained.pt",
        ),
    )
}


def get_release(name: str) -> Release:
    if name not in RELEASES:
        raise Ulip2Error(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    return RELEASES[name]


def download_release(name: str) -> Path:
    """The release's checkpoint file, downloaded once into the Hugging Face cache."""
    release = get_release(name)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(release.hf_repo, release.hf_file, repo_type=release.hf_repo_type))
    except ImportError as exc:
        raise Ulip2Error(f"downloading releases needs huggingface_hub: pip install 'ulip2[torch]' ({exc})") from exc
    except Exception as exc:  # offline, hub errors: all mean "could not fetch"
        raise Ulip2Error(
            f"could not download {release.hf_file} from {release.hf_repo} ({type(exc).__name__}: {exc}).\n"
            "This needs network access to the Hugging Face hub once. Offline, download the file elsewhere and run:\n"
            f"  ulip2 models import-ulip2 {Path(release.hf_file).name} --out BUNDLE_DIR"
        ) from exc
