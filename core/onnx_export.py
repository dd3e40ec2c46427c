"""Writing a torch module as ONNX, the one way the encoder and every text tower are
exported (needs the `torch` extra)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "points", "embedding"


def export_module(module, inputs: dict, path: str | os.PathLike, dynamic_axes: dict) -> Path:
    """Write `module`, called with the example tensors of `inputs` in order, as ONNX: inputs
    named as in `inputs`, one output named OUTPUT_NAME."""
    import torch

    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that honours FPS's hand-written ONNX
        # form (see core/models/ops.py); it warns that a newer exporter exists.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            tuple(inputs.values()),
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
        )
    return Path(path)
