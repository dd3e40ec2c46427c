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
def offline_hub(monkeypatch, tmp_path):
    """This process's huggingface_hub marked offline, so every request is refused before it
    leaves the machine, with an empty cache at tmp_path/hf-cache: what a machine with neither
    network nor the weights sees, whatever this one has, and at once."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def allocated():
    """`with allocated() as peak:` measures the most the block held allocated at once, in
    peak.bytes (tracemalloc: Python objects and numpy arrays)."""
    import contextlib
    import tracemalloc
    import types

    @contextlib.contextmanager
    def measure():
        peak = types.SimpleNamespace(bytes=None)
        tracemalloc.start()
        try:
            yield peak
        finally:
            peak.bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    return measure


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



@pytest.fixture
def local_ray(monkeypatch):
    """A one-CPU local Ray; its session files go to a short temporary folder (Ray's socket
    paths must stay under the OS limit) that is removed afterwards."""
    ray = pytest.importorskip("ray", reason="the ray extra: pip install 'ulip2[ray]'")
    import shutil
    import tempfile

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to the home folder
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = tempfile.mkdtemp(prefix="ray")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=folder)
    yield ray
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


# -- tiers ------------------------------------------------------------------------------
# `pytest -q` runs every test, as CI does. The slow ones carry the marker of their tier
# (blender, gui, ray, train, models, crash, serve: pyproject.toml says what each holds); every other test
# is marked `fast` here, so a developer runs the fast tier alone with `pytest -q -m fast -n 2`.
# A test or a module may name its tier itself (pytest.mark, pytestmark). Beyond that a test
# is marked from what it asks for, in its own body, in a fixture of tests/ it uses, or at
# its module's top level: pytest.importorskip (or an import) of bpy, PySide6 or pytestqt,
# ray, uvicorn or the serve package; the qtbot fixture; tests/blender_files.py, whose
# helpers write files with bpy.

TIERS = ("blender", "gui", "ray", "train", "models", "crash", "serve")
_MODULE_TIERS = {"bpy": "blender", "blender_files": "blender", "PySide6": "gui", "pytestqt": "gui", "ray": "ray",
                 "uvicorn": "serve", "serve": "serve", "selenium": "serve"}
_NAME_TIERS = {"write_blend_files": "blender"}
_FIXTURE_TIERS = {"qtbot": "gui"}
_TESTS = os.path.dirname(os.path.abspath(__file__))
_ASKED: dict = {}


def _tiers_in(nodes) -> set[str]:
    """The tiers AST nodes ask for: importorskip("X") calls, imports of X, the Blender helpers."""
    import ast

    found = set()
    for node in nodes:
        for sub in ast.walk(node):
            names = []
            if isinstance(sub, ast.Call) and getattr(sub.func, "attr", getattr(sub.func, "id", None)) == "importorskip" \
                    and sub.args and isinstance(sub.args[0], ast.Constant) and isinstance(sub.args[0].value, str):
                names = [sub.args[0].value]
            elif isinstance(sub, ast.Import):
                names = [alias.name for alias in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                names = [sub.module]
            elif isinstance(sub, ast.Name) and sub.id in _NAME_TIERS:
                found.add(_NAME_TIERS[sub.id])
            found.update(_MODULE_TIERS[n.split(".")[0]] for n in names if n.split(".")[0] in _MODULE_TIERS)
    return found


def _asked_by(obj, *, top_level_only=False) -> set[str]:
    """What a function of tests/ (or a test module's top level) asks for; nothing for code elsewhere."""
    import ast
    import inspect
    import textwrap

    if obj not in _ASKED:
        _ASKED[obj] = set()
        try:
            if os.path.dirname(os.path.abspath(inspect.getsourcefile(obj))) == _TESTS:
                tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
                nodes = tree.body
                if top_level_only:
                    nodes = [n for n in nodes if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
                _ASKED[obj] = _tiers_in(nodes)
        except (OSError, TypeError):  # no source: not a function of tests/
            pass
    return _ASKED[obj]


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config, items):
    import inspect

    for item in items:
        module, function = getattr(item, "module", None), getattr(item, "function", None)
        tiers = set(_asked_by(module, top_level_only=True)) if module else set()
        tiers |= {_FIXTURE_TIERS[name] for name in item.fixturenames if name in _FIXTURE_TIERS}
        if function is not None:
            tiers |= _asked_by(inspect.unwrap(function))
        for fixturedefs in item._fixtureinfo.name2fixturedefs.values():
            for fixturedef in fixturedefs:
                tiers |= _asked_by(inspect.unwrap(fixturedef.func))
        marked = {mark.name for mark in item.iter_markers()}
        for tier in sorted(tiers - marked):
            item.add_marker(getattr(pytest.mark, tier))
        if not (tiers | marked) & set(TIERS):
            item.add_marker(pytest.mark.fast)
