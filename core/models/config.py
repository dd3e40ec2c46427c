"""Encoder configs as data: one JSON file per named size in core/model_configs/.

Kept free of torch so bundles and the CLI can read configs without loading a model.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

from ..errors import Ulip2Error


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    name: str
    trans_dim: int
    depth: int
    num_heads: int
    num_group: int
    group_size: int
    encoder_dims: int
    in_channels: int
    num_points: int
    embed_dim: int
    drop_path_rate: float = 0.0
    # The group encoder's widths: conv in -> a -> b, max-pool, conv 2b -> c -> encoder_dims.
    # ULIP's are (128, 256, 512); the c-wide layer over every grouped point is most of a
    # small config's cost.
    group_dims: tuple[int, int, int] = (128, 256, 512)
    description: str = ""

    @property
    def feat_dim(self) -> int:
        # The encoder's output is [cls token, max-pool over group tokens].
        return 2 * self.trans_dim

    def with_embed_dim(self, embed_dim: int) -> "EncoderConfig":
        return dataclasses.replace(self, embed_dim=int(embed_dim))

    def to_dict(self) -> dict:
        """As JSON holds it (bundle.json, checkpoints): group_dims as a list."""
        return {**dataclasses.asdict(self), "group_dims": list(self.group_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise Ulip2Error(f"encoder config {data.get('name', '?')!r} has unknown fields: {sorted(unknown)}")
        if "group_dims" in data:
            data = {**data, "group_dims": tuple(int(d) for d in data["group_dims"])}
        return cls(**data)


def _config_files():
    return resources.files("core") / "model_configs"


def list_configs() -> list[str]:
    """Names of the shipped encoder configs."""
    return sorted(p.name[: -len(".json")] for p in _config_files().iterdir() if p.name.endswith(".json"))


def get_config(name: str) -> EncoderConfig:
    """The shipped config called `name` (e.g. 'ulip2-pointbert', 'pointbert-small')."""
    path = _config_files() / f"{name}.json"
    if not path.is_file():
        raise Ulip2Error(f"unknown encoder config {name!r}; shipped configs: {', '.join(list_configs())}")
    return EncoderConfig.from_dict({"name": name, **json.loads(path.read_text())})
