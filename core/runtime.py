"""Run a model bundle's 3D encoder with onnxruntime (CUDA where present, CPU otherwise), in
the kind of session text towers run in too (core.spaces.onnx_text). No torch is imported here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from .bundle import Bundle, default_bundle_path, read_bundle
from .errors import BundleError
from .sampling import unit_sphere
from .upright import Upright

DEVICES = ("auto", "cpu", "cuda")


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers for `device`: 'auto' takes CUDA when onnxruntime-gpu sees a GPU."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise BundleError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise BundleError(
            "device 'cuda' asked for, but onnxruntime has no CUDA provider here "
            f"(available: {', '.join(available)}); install the gpu extra: pip install 'ulip2[gpu]'"
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def inference_session(model: os.PathLike | bytes, device: str = "auto", threads: int | None = None):
    """An onnxruntime session for an encoder or text tower (a path or serialised bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = choose_providers(device)
    # On CPU, keep MatMul(x, Transpose(y)) unfused: fused, FPS's 511 steps each re-read the
    # (5, N) distance operand transposed, which makes FPS 10k -> 512 about 1.4x slower.
    disabled = ["MatmulTransposeFusion"] if providers == ["CPUExecutionProvider"] else []
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers,
                                disabled_optimizers=disabled)


class PointEncoder:
    """A bundle's 3D encoder: points (B, N, C) or (N, C) -> unit embeddings (B, dim). When the
    bundle carries an up-axis scorer, each cloud whose frame is not known (a file format
    that does not say which axis is up: core.formats.states_frame) is turned upright first
    (core.upright)."""

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None, *, device: str = "auto",
                 precision: str = "fp32", threads: int | None = None):
        if bundle is None:
            bundle = default_bundle_path()
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        self.session = inference_session(self.bundle.onnx_path(precision), device, threads)
        self.providers = self.session.get_providers()
        self._input = self.session.get_inputs()[0].name
        self.upright = Upright.load(self.bundle.path / self.bundle.upright) if self.bundle.upright else None

    @property
    def dim(self) -> int:
        return self.bundle.dim

    @property
    def num_points(self) -> int:
        return self.bundle.num_points

    def embed_points(self, points: np.ndarray, batch_size: int = 16, *, frame_known=False) -> np.ndarray:
        """`frame_known`: True, or one bool a cloud, for clouds that stand as their file says
        (y up): the up-axis scorer, right on about 5 in 6, would only lose some of them."""
        points = np.asarray(points, dtype=np.float32)
        if points.ndim == 2:
            points = points[None]
        channels = self.bundle.channels
        if points.ndim != 3 or points.shape[2] < channels:
            raise BundleError(f"points must be (B, N, >={channels}) or (N, >={channels}); got {points.shape}")
        if points.shape[1] < self.bundle.config["num_group"]:
            raise BundleError(f"need at least {self.bundle.config['num_group']} points per object, got {points.shape[1]}")
        points = unit_sphere(points[..., :channels])
        unknown = ~np.broadcast_to(np.asarray(frame_known, dtype=bool), points.shape[:1])
        if self.upright is not None and unknown.any():
            points[unknown] = self.upright.turn(points[unknown])
        out = [self.session.run(None, {self._input: points[i:i + batch_size]})[0]
               for i in range(0, len(points), batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)

    def embed_files(self, paths: Sequence[str | os.PathLike], *, seed: int = 0,
                    batch_size: int = 16) -> Iterable[tuple[str, np.ndarray]]:
        """(path, embedding) per mesh file, sampled with the bundle's point count; AssetError for a bad file."""
        from .formats import states_frame
        from .meshio import load_points

        for path in paths:
            points = load_points(path, self.num_points, seed=seed)
            known = states_frame(path)
            yield os.fspath(path), self.embed_points(points, batch_size=batch_size, frame_known=known)[0]

