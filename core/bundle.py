"""The model bundle: a directory that turns points into embeddings on its own.

    bundle.json        format version, space (name, dim), encoder config, points per
                       object, input channels, the ONNX files, provenance, `trained`
    encoder.onnx       points (B, N, 6) -> L2-normalised embedding (B, dim), fp32
    encoder.fp16.onnx  the same in float16 (optional; for GPUs)
    encoder.safetensors  the torch weights (float16), for fine-tuning with ulip2 retrain
    text/text.onnx     the space's text tower (optional): token ids (and attention mask)
                       -> L2-normalised text embedding (B, dim), fp32, dynamic batch
    text/tokenizer.json  its tokenizer for the HF `tokenizers` library, truncation and
                       padding included
    prompts.npz        prompt ensembles (ULIP's templates) of the shipped vocabularies'
                       class names in the bundle's space: "classnames", "vectors",
                       "templates" (optional; bundle.json's "prompts" names it). Tagging
                       with LVIS then embeds none of its 74k prompts. Bundles made before
                       kept it as text/prompts.npz under "text": it is read from there too.
    upright.npz        the up-axis scorer (optional; bundle.json's "upright" names it): each
                       cloud is turned upright before the encoder sees it (core.upright)

With a text tower (bundle.json's optional "text" entry: "onnx", "tokenizer", and the
space's text-cache key), the bundle embeds texts without torch
(core.spaces.text_encoder); `ulip2 models add-text` adds one.
Reading a bundle needs neither torch nor the space's weights: read_bundle checks bundle.json
and, with onnxruntime, the encoders' declared input and output against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from .errors import BundleError

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
DEFAULT_BUNDLE_ENV = "ULIP2_BUNDLE"
# The default model, trained by training/recipes/default_model.py and shipped in the package.
SHIPPED_BUNDLE = Path(__file__).parent / "data" / "default_bundle"


class UntrainedBundleWarning(UserWarning):
    """The bundle's encoder has random weights: its embeddings carry no meaning."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    space: str
    dim: int
    config: dict
    num_points: int
    channels: int
    files: dict  # "fp32" / "fp16" -> ONNX file name, "weights" -> torch weights
    trained: bool
    provenance: dict
    # "onnx", "tokenizer" -> file names; "cache_key" -> the space's text-cache key; None
    # for a bundle without a text tower (the key is optional in bundle.json).
    text: dict | None = None
    prompts: str | None = None  # prompts.npz, the carried prompt ensembles, or None
    upright: str | None = None  # upright.npz, the up-axis scorer (core.upright), or None

    @property
    def has_text(self) -> bool:
        return self.text is not None

    def carried_prompts(self, templates) -> dict:
        """class name -> prompt-ensemble vector from the bundle's prompts.npz, when it was made
        with these templates (else {}): no torch, no text tower needed."""
        if not self.prompts:
            return {}
        import numpy as np

        with np.load(self.path / self.prompts, allow_pickle=False) as data:
            if data["templates"].tolist() != list(templates):
                return {}
            return dict(zip(data["classnames"].tolist(), data["vectors"].astype(np.float32)))

    def text_file(self, what: str) -> Path:
        """The text tower's "onnx" or "tokenizer" file."""
        if self.text is None:
            raise BundleError(
                f"bundle {self.path} has no text tower; make a copy with one: "
                f"ulip2 models add-text {self.path} --out DIR"
            )
        return self.path / self.text[what]

    def onnx_path(self, precision: str = "fp32") -> Path:
        if precision not in self.files:
            raise BundleError(
                f"bundle {self.path} has no {precision} encoder (it has: {', '.join(sorted(self.files))}); "
                f"export one with: ulip2 export --out DIR --fp16"
            )
        return self.path / self.files[precision]

    def to_json(self) -> dict:
        meta = {
            "format_version": FORMAT_VERSION,
            "space": {"name": self.space, "dim": self.dim},
            "encoder": self.config,
            "num_points": self.num_points,
            "channels": self.channels,
            "files": self.files,
            "trained": self.trained,
            "provenance": self.provenance,
        }
        if self.text is not None:
            meta["text"] = {k: v for k, v in self.text.items() if k != "prompts"}
        if self.prompts:
            meta["prompts"] = self.prompts
        if self.upright:
            meta["upright"] = self.upright
        return meta


def write_bundle(bundle: Bundle) -> Path:
    """Write bundle.json atomically (the ONNX files must already be in place)."""
    target = bundle.path / BUNDLE_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bundle.to_json(), indent=2) + "\n")
    os.replace(tmp, target)
    return target


# What bundle.json may say. The bounds keep a lying bundle from allocating without limit
# (num_points 2,000,000,000 took 24 GB): the shipped configs take up to 10,000 points and
# 512 groups, and the widest space and encoder width here are 1,280.
MAX_POINTS = 65536
MAX_WIDTH = 8192  # space dim, encoder widths and depth
CHANNELS = (3, 6)  # xyz, or xyz + rgb: what the sampler makes
ENCODERS = ("fp32", "fp16")  # the "files" entries that are encoder ONNX files
REEXPORT = "re-export it with: ulip2 export --out DIR"
_KINDS = {int: "a whole number", str: "a string", dict: "an object", bool: "true or false"}


def _get(entry: dict, key: str, kind: type, where: str = ""):
    """entry[key], which must be a `kind`; a ValueError naming the field (`where` + key, e.g.
    "encoder.num_group") when it is missing or of another type."""
    if key not in entry:
        raise ValueError(f'no "{where}{key}"')
    value = entry[key]
    # Python's bool is an int, but `true` is no count
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f'"{where}{key}" is {value!r}, not {_KINDS[kind]}')
    return value


def _count(entry: dict, key: str, low: int, high: int, where: str = "") -> int:
    value = _get(entry, key, int, where)
    if not low <= value <= high:
        raise ValueError(f'"{where}{key}" is {value}, outside {low}..{high}')
    return value


def _file_name(root: Path, entry: dict, key: str, where: str = "") -> str:
    """entry[key], a file name relative to the bundle folder `root` that stays inside it: an
    absolute path, a way up through "..", or a link out would have the bundle read files
    that are not its own."""
    name = _get(entry, key, str, where)
    if Path(name).is_absolute() or not (root / name).resolve().is_relative_to(root):
        raise ValueError(f'"{where}{key}" is {name!r}, outside the bundle folder; bundle files are named relative to it')
    return name


def _describe(root: Path, meta) -> Bundle:
    """The bundle at `root` as bundle.json's `meta` describes it, every field checked for its
    type and range (a ValueError naming the field)."""
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    version = _get(meta, "format_version", int)
    if version > FORMAT_VERSION:
        raise BundleError(f"{root / BUNDLE_FILE}: format version {version} is newer than this ulip2 reads "
                          f"({FORMAT_VERSION}); upgrade ulip2")
    space, encoder, files = (_get(meta, key, dict) for key in ("space", "encoder", "files"))
    num_points = _count(meta, "num_points", 1, MAX_POINTS)
    channels = _get(meta, "channels", int)
    if channels not in CHANNELS:
        raise ValueError(f'"channels" is {channels}; points have {" or ".join(map(str, CHANNELS))} (xyz, rgb)')
    dim = _count(space, "dim", 1, MAX_WIDTH, "space.")
    _get(space, "name", str, "space.")
    _get(encoder, "name", str, "encoder.")
    for key in ("trans_dim", "depth", "num_heads", "encoder_dims"):
        _count(encoder, key, 1, MAX_WIDTH, "encoder.")
    for key in ("num_group", "group_size"):  # FPS picks num_group of the points; kNN groups group_size
        _count(encoder, key, 1, num_points, "encoder.")
    # the torch encoder (ulip2 retrain) is built from "encoder": it must be the graph's model
    for key, value in (("in_channels", channels), ("num_points", num_points), ("embed_dim", dim)):
        if encoder.get(key) != value:
            raise ValueError(f'"encoder.{key}" is {encoder.get(key)!r} but the bundle says {value}')
    _get(files, "fp32", str, "files.")  # the encoder every bundle has
    text = dict(_get(meta, "text", dict)) if "text" in meta else None
    if text is not None:
        for key in ("onnx", "tokenizer"):
            _file_name(root, text, key, "text.")
    # bundles made before "prompts" kept the prompt ensembles under "text"
    prompts_entry, where = (meta, "") if "prompts" in meta else (text or {}, "text.")
    return Bundle(
        path=root,
        space=space["name"],
        dim=dim,
        config=encoder,
        num_points=num_points,
        channels=channels,
        files={key: _file_name(root, files, key, "files.") for key in files},
        trained=_get(meta, "trained", bool),
        provenance=dict(_get(meta, "provenance", dict)) if "provenance" in meta else {},
        text=text,
        prompts=_file_name(root, prompts_entry, "prompts", where) if "prompts" in prompts_entry else None,
        upright=_file_name(root, meta, "upright") if "upright" in meta else None,
    )


def _shape(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _io_problem(bundle: Bundle, inputs, outputs) -> str | None:
    """How the encoder graph's declared input and output contradict bundle.json, or None.
    A dimension is an int when fixed, a name (or None) when dynamic."""
    if len(inputs) != 1 or not outputs:
        return f"the graph takes {len(inputs)} inputs and gives {len(outputs)} outputs, not points -> embedding"
    shape, out = inputs[0].shape, outputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 3:
        return f"the graph takes {inputs[0].type} {_shape(shape)}, not float points (batch, points, channels)"
    if shape[2] != bundle.channels:
        return f"the graph takes {shape[2]} channels per point but bundle.json says channels {bundle.channels}"
    if isinstance(shape[0], int):
        return f"the graph takes a fixed batch of {shape[0]} (input {_shape(shape)}); ulip2 needs a dynamic batch axis"
    if isinstance(shape[1], int) and shape[1] != bundle.num_points:
        return f"the graph takes {shape[1]} points but bundle.json says num_points {bundle.num_points}"
    if len(out) != 2 or out[1] != bundle.dim:
        return f"the graph gives embeddings {_shape(out)} but bundle.json says space dim {bundle.dim}"
    return None


def _check_encoder(bundle: Bundle, precision: str) -> None:
    """Refuse an encoder ONNX that onnxruntime cannot load, or whose input or output disagree
    with bundle.json. Only the graph's declared shapes are read: nothing runs, the graph is not
    optimised (the default bundle's: about 40 ms)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    file = bundle.path / bundle.files[precision]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf,
            ort_errors.NotImplemented) as exc:
        raise BundleError(f"{file}: not an encoder onnxruntime loads ({' '.join(str(exc).split())}); {REEXPORT}") from exc
    problem = _io_problem(bundle, session.get_inputs(), session.get_outputs())
    if problem:
        raise BundleError(f"{file}: {problem}; {REEXPORT}")


def check_encoder_files(bundle: Bundle) -> None:
    """_check_encoder for each encoder the bundle carries (fp32, fp16)."""
    for precision in ENCODERS:
        if precision in bundle.files:
            _check_encoder(bundle, precision)


def bundle_path(path: str | os.PathLike) -> Path:
    """A bundle argument as a folder: the name `default` (when no such folder is here) is
    the bundle commands use when none is named ($ULIP2_BUNDLE, else the shipped one)."""
    if os.fspath(path) == "default" and not Path("default").exists():
        return default_bundle_path()
    return Path(path).expanduser()


def read_bundle(path: str | os.PathLike, *, warn_untrained: bool = True, check_encoders: bool = True) -> Bundle:
    """Open the bundle at `path` (a directory, its bundle.json, or `default`) and check it: its
    description's fields, types and ranges, its files (regular files inside the folder), and
    (unless `check_encoders` is False: a text query, which runs no encoder, checks them when
    it needs one) its encoders' ONNX input and output against the description."""
    path = bundle_path(path)
    if path.name == BUNDLE_FILE:
        path = path.parent
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        raise BundleError(f"{path}: not a model bundle (no {BUNDLE_FILE}); make one with: ulip2 export --out {path}")
    try:
        bundle = _describe(path.resolve(), json.loads(meta_file.read_text()))
    except ValueError as exc:
        raise BundleError(f"{meta_file}: malformed bundle description ({exc}); {REEXPORT}") from exc
    text_files = [bundle.text[k] for k in ("onnx", "tokenizer")] if bundle.text else []
    needed = [*bundle.files.values(), *text_files, *(name for name in (bundle.prompts, bundle.upright) if name)]
    missing = [name for name in needed if not (bundle.path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: bundle is incomplete, missing {', '.join(missing)}; {REEXPORT}")
    if check_encoders:
        check_encoder_files(bundle)
    if warn_untrained and not bundle.trained:
        warnings.warn(
            f"model bundle {bundle.path} is untrained (random weights): its embeddings carry no meaning; "
            "export one from a checkpoint with: ulip2 export --checkpoint CKPT",
            UntrainedBundleWarning,
            stacklevel=2,
        )
    return bundle


def default_bundle_path() -> Path:
    """The bundle used when none is named: $ULIP2_BUNDLE, else the one shipped with ulip2."""
    env = os.environ.get(DEFAULT_BUNDLE_ENV)
    if env:
        return Path(env).expanduser()
    if (SHIPPED_BUNDLE / BUNDLE_FILE).is_file():
        return SHIPPED_BUNDLE
    raise BundleError(
        "no model bundle given and none is shipped with this install yet; "
        f"pass --bundle DIR, set {DEFAULT_BUNDLE_ENV}, or make one with: ulip2 export --out DIR"
    )
