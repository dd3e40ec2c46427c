"""Test-wide settings: every cache and user folder points into a temporary directory,
so the suite never writes outside the repo or tmp, and no hub is ever contacted."""

import os
import tempfile

import pytest

_TMP = tempfile.mkdtemp(prefix="ulip2-tests-")
for _var, _sub in {
    "ULIP2_CACHE_DIR": "ulip2-cache",
    "HF_HOME": "hf-home",
    "XDG_CACHE_HOME": "xdg-cache",
    "TORCH_HOME": "torch-home",
    "BLENDER_USER_RESOURCES": "blender-user",
}.items():
    os.environ[_var] = os.path.join(_TMP, _sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture
def unreachable_hub(tmp_path):
    """The environment of a machine whose Hugging Face hub refuses every connection (a local
    port nothing listens on, whether or not this machine has network), not marked offline,
    with an empty cache at tmp_path/hf (HF_HOME)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """One pointbert-tiny bundle (random weights, minilm space, fp32 + fp16) exported once for
    the session, with the eval-mode torch model it was exported from. Tests must not change either."""
    import types

    from core.export import export_bundle
    from core.models import create_encoder

    model = create_encoder("pointbert-tiny", embed_dim=384, seed=0).eval()
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    bundle = export_bundle(out, model=model, space="minilm", fp16=True)
    return types.SimpleNamespace(bundle=bundle, model=model, path=out)
