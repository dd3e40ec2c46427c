"""Export the torch encoder, and the space's text tower, to an ONNX model bundle (needs the `torch` extra)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .bundle import SHIPPED_BUNDLE, Bundle, read_bundle, write_bundle
from .errors import BundleError
from .onnx_export import INPUT_NAME, OUTPUT_NAME, export_module
from .paths import file_sha256, replacing_folder
from .progress import OnProgress
from .upright import UPRIGHT_FILE, Upright

# The torch weights travel in the bundle (float16: half the size, ample as a starting
# point), so `ulip2 retrain --from BUNDLE` can fine-tune what the ONNX encoder runs.
WEIGHTS_FILE = "encoder.safetensors"
# The text tower's folder inside a bundle (see core/bundle.py).
TEXT_DIR = "text"
PROMPTS_FILE = "prompts.npz"


def export_onnx(model, path: str | os.PathLike, num_points: int) -> Path:
    """Write `model` (points (B, N, C) -> embedding) as ONNX with dynamic batch and point count."""
    import torch

    example = torch.rand(2, num_points, model.config.in_channels)
    return export_module(model, {INPUT_NAME: example}, path,
                         {INPUT_NAME: {0: "batch", 1: "points"}, OUTPUT_NAME: {0: "batch"}})


def save_weights(model, path: str | os.PathLike, space: str) -> Path:
    """The encoder's state dict as float16 safetensors, with its config and space as metadata."""
    import json

    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"encoder_config": json.dumps(model.config.to_dict()), "space": space})
    return Path(path)


def load_bundle_model(bundle):
    """The torch encoder of a bundle (from its weights file), for fine-tuning."""
    from .models import EncoderConfig, create_encoder
    from .models.checkpoint import load_encoder_weights

    if "weights" not in bundle.files:
        raise BundleError(f"bundle {bundle.path} carries no torch weights (made before ulip2 0.1); re-export it")
    model = create_encoder(EncoderConfig.from_dict(bundle.config))
    load_encoder_weights(model, bundle.path / bundle.files["weights"])
    return model


def _index_nodes(graph) -> list[str]:
    """Names of the nodes that compute point indices (FPS, kNN): everything upstream of
    ArgMax/TopK. They stay in float32, since float16 distances would pick other points."""
    producer = {out: node for node in graph.node for out in node.output}
    keep, stack = set(), [n for n in graph.node if n.op_type in ("ArgMax", "TopK")]
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    return sorted(keep)


def _skip_fp16_round_trips(graph, fp32_tensors: set[str]) -> None:
    """The converter hands a float32 tensor that float16 nodes also read to the next float32
    node through Cast(fp16) -> Cast(fp32), rounding it to half precision on the way (enough
    to change FPS picks). Let those float32 readers take the float32 tensor itself."""
    from onnx import TensorProto

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {out: node for node in graph.node for out in node.output}
    direct = {}
    for node in graph.node:
        src = producer.get(node.input[0]) if cast_to(node) == TensorProto.FLOAT else None
        if src is not None and cast_to(src) == TensorProto.FLOAT16 and src.input[0] in fp32_tensors:
            direct[node.output[0]] = src.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in direct:
                node.input[i] = direct[name]
    # drop the casts nothing reads any more
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _sort_topologically(graph) -> None:
    """Reorder nodes so each comes after its inputs' producers: the converter appends its
    casts at the end, which onnxruntime tolerates but the ONNX checker and other tools don't."""
    import onnx

    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = list(range(len(graph.node))), []
    while pending:
        runnable = [i for i in pending if all(name in ready for name in graph.node[i].input)]
        if not runnable:
            raise BundleError("fp16 conversion produced a graph with a cycle or a dangling input")
        for i in runnable:
            ready.update(graph.node[i].output)
        order += runnable
        taken = set(runnable)
        pending = [i for i in pending if i not in taken]
    nodes = [onnx.NodeProto() for _ in order]
    for copy, i in zip(nodes, order):
        copy.CopyFrom(graph.node[i])
    del graph.node[:]
    graph.node.extend(nodes)


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A float16 copy of an fp32 encoder with float32 inputs/outputs and index maths."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    blocked = _index_nodes(model.graph)
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
    fp32_tensors = {i.name for i in half.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    fp32_tensors |= {out for node in half.graph.node if node.name in set(blocked) for out in node.output}
    _skip_fp16_round_trips(half.graph, fp32_tensors)
    _sort_topologically(half.graph)
    onnx.save(half, str(dst))
    return Path(dst)


def store_weights_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy of an ONNX model with its float32 weights stored as float16, each cast back to
    float32 by a Cast node that onnxruntime folds when the session loads: half the file,
    float32 arithmetic (a float16 graph would run slower on CPUs)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    weights, casts = [], []
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype != np.float32 or array.size < 1024:  # scalars (epsilons, scales) stay exact; they weigh nothing
            weights.append(tensor)
            continue
        weights.append(numpy_helper.from_array(array.astype(np.float16), f"{tensor.name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{tensor.name}.fp16"], [tensor.name], to=onnx.TensorProto.FLOAT))
    del model.graph.initializer[:]
    model.graph.initializer.extend(weights)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    onnx.save(model, str(dst))
    return Path(dst)


def export_bundle(
    out: str | os.PathLike,
    *,
    config: str = "pointbert-small",
    space: str = "minilm",
    checkpoint: str | os.PathLike | None = None,
    fp16: bool = False,
    text: bool = False,
    prompts: Sequence[str] = (),
    seed: int = 0,
    model=None,
    source: str | None = None,
    overwrite: bool = False,
    on_step=None,
    on_progress: OnProgress | None = None,
) -> Bundle:
    """Build (or take) an encoder for `space`, load `checkpoint` if given, and write a bundle to `out`.

    Without a checkpoint (and no `model`) the weights are random and the bundle says
    `"trained": false`. `text` adds the space's text tower, with the prompt ensembles of the
    vocabularies named in `prompts` (see add_text_tower). `on_step(message)` is told as each
    stage starts. The bundle is written into a temporary folder and moved into place, so an
    interrupted export never leaves a half bundle at `out`.
    """
    from .models import create_encoder
    from .models.checkpoint import load_encoder_weights
    from .spaces import space_dim

    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BundleError(f"{out} exists and is not empty; pick a new folder or pass --overwrite")
    step = on_step or (lambda message: None)
    dim = space_dim(space)
    if model is None:
        step(f"building {config}")
        model = create_encoder(config, embed_dim=dim, seed=seed)
        if checkpoint is not None:
            step(f"loading {Path(checkpoint).name}")
            load_encoder_weights(model, checkpoint)
    elif model.config.embed_dim != dim:
        raise BundleError(f"encoder projects to {model.config.embed_dim} dims but space {space!r} has {dim}")
    trained = checkpoint is not None or source is not None
    provenance = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ulip2_version": __version__,
        "source": source or ("checkpoint" if checkpoint else "random init (seed %d)" % seed),
    }
    if checkpoint is not None:
        provenance["checkpoint"] = {"path": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint)}

    with replacing_folder(out) as staging:
        files = {"fp32": "encoder.onnx", "weights": WEIGHTS_FILE}
        save_weights(model, staging / WEIGHTS_FILE, space)
        step("exporting ONNX (fp32)")
        export_onnx(model, staging / files["fp32"], model.config.num_points)
        if fp16:
            files["fp16"] = "encoder.fp16.onnx"
            step("converting to fp16")
            convert_fp16(staging / files["fp32"], staging / files["fp16"])
        bundle = Bundle(
            path=staging,
            space=space,
            dim=dim,
            config=model.config.to_dict(),
            num_points=model.config.num_points,
            channels=model.config.in_channels,
            files=files,
            trained=trained,
            provenance=provenance,
        )
        write_bundle(bundle)
        if text:
            step("exporting the text tower")
            bundle = add_text_tower(staging, prompts, on_progress=on_progress)
    return Bundle(**{**bundle.__dict__, "path": out.resolve()})


def _changeable(bundle_dir: str | os.PathLike, how: str) -> Bundle:
    """The bundle at `bundle_dir`, refused when it is the one shipped with ulip2 (`how` says
    the way round: a copy made by add-text)."""
    bundle = read_bundle(bundle_dir, warn_untrained=False)
    if bundle.path == SHIPPED_BUNDLE.resolve():
        raise BundleError(f"the bundle shipped with ulip2 stays as installed; {how}: "
                          "ulip2 models add-text default --out DIR")
    return bundle


def add_text_tower(bundle_dir: str | os.PathLike, prompts: Sequence[str] = (), *,
                   on_progress: OnProgress | None = None) -> Bundle:
    """Export the text tower of the bundle's space into the bundle (text/text.onnx and
    text/tokenizer.json), so the bundle embeds texts with onnxruntime alone
    (core.spaces.text_encoder). Loads the space with torch; replaces a text tower
    already there; returns the bundle read again.

    `prompts` names shipped vocabularies (core.spaces.vocabularies.VOCABULARIES) whose prompt
    ensembles are computed now and carried (add_prompts; on_progress: classes embedded)."""
    from .spaces import load_space
    from .spaces.onnx_text import export_tower

    bundle = _changeable(bundle_dir, "make a copy with a text tower")
    space = load_space(bundle.space)
    if space.dim != bundle.dim:
        raise BundleError(f"space {bundle.space!r} embeds in {space.dim} dims but bundle {bundle.path} says {bundle.dim}")
    with replacing_folder(bundle.path / TEXT_DIR) as staging:
        entry = export_tower(space, staging)
    entry |= {"onnx": f"{TEXT_DIR}/{entry['onnx']}", "tokenizer": f"{TEXT_DIR}/{entry['tokenizer']}"}
    write_bundle(dataclasses.replace(bundle, text=entry))
    if prompts:
        return add_prompts(bundle.path, prompts, space, on_progress=on_progress)
    return read_bundle(bundle.path, warn_untrained=False)


def add_prompts(bundle_dir: str | os.PathLike, vocabularies: Sequence[str], space=None, *,
                on_progress: OnProgress | None = None) -> Bundle:
    """Compute the prompt ensembles (ULIP's templates) of the named shipped vocabularies in
    the bundle's space and carry them in the bundle (prompts.npz, written atomically): every
    surface then tags with them without embedding a prompt (LVIS: 74k texts, minutes on a CPU).
    Loads the torch space unless one is given; returns the bundle read again. on_progress:
    (classes embedded, classes), as core.progress says."""
    from .spaces import load_space
    from .spaces.vocabularies import ULIP_TEMPLATES, load_vocabulary, prompt_name

    bundle = read_bundle(bundle_dir, warn_untrained=False)
    space = space or load_space(bundle.space)
    classnames = list(dict.fromkeys(prompt_name(label) for vocab in vocabularies for label in load_vocabulary(vocab)[1]))
    staged = bundle.path / f".{PROMPTS_FILE}.tmp.npz"
    np.savez(staged, classnames=np.array(classnames), templates=np.array(ULIP_TEMPLATES),
             vectors=space.embed_prompts(classnames, on_progress=on_progress))
    os.replace(staged, bundle.path / PROMPTS_FILE)
    write_bundle(dataclasses.replace(bundle, prompts=PROMPTS_FILE))
    return read_bundle(bundle.path, warn_untrained=False)


def add_upright(bundle_dir: str | os.PathLike, scorer: Upright) -> Bundle:
    """Carry an up-axis scorer (core.upright; training/upright.py fits one) in the bundle
    (upright.npz, written atomically): its encoder then sees every cloud turned upright.
    Replaces one already there; returns the bundle read again."""
    bundle = _changeable(bundle_dir, "copy it first")
    staged = bundle.path / f".{UPRIGHT_FILE}.tmp.npz"
    scorer.save(staged)
    os.replace(staged, bundle.path / UPRIGHT_FILE)
    write_bundle(dataclasses.replace(bundle, upright=UPRIGHT_FILE))
    return read_bundle(bundle.path, warn_untrained=False)
