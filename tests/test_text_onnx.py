"""Text towers in bundles (core.export.add_text_tower) run by onnxruntime without torch
(core.spaces.text_space_for_bundle): parity with the torch spaces, the bundle.json entry,
the fallback for bundles without one, and a process that never imports torch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import core.bundle
from core.bundle import BUNDLE_FILE, read_bundle
from core.errors import BundleError
from core.export import add_text_tower
from core.runtime import OnnxTextSpace
from core.spaces import load_space, text_space_for_bundle
from core.textcache import TextCache

REPO = Path(__file__).resolve().parents[1]
LONG = " ".join(f"word{i} and more," for i in range(300))  # well past minilm's 256 tokens
TEXTS = [
    "a chair",
    "A WOODEN chair, with two arm-rests; painted red (about 80 cm tall)!",
    "Café crème brûlée — naïve façade, Straße, İstanbul",
    "日本語のテキスト and emoji 🪑🚗",
    "",
    LONG,
]


@pytest.fixture
def no_text_cache(monkeypatch):
    """Both runtimes really encode: nothing comes from the cache."""
    monkeypatch.setenv("ULIP2_TEXT_CACHE", "0")


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory):
    """A copy of the shipped default bundle (minilm space) with its text tower added."""
    path = tmp_path_factory.mktemp("text-bundles") / "default-with-text"
    shutil.copytree(core.bundle.SHIPPED_BUNDLE, path)
    return add_text_tower(path)


@pytest.fixture(scope="module")
def minilm():
    return load_space("minilm")


# -- minilm: parity with the torch space -----------------------------------------------

def test_minilm_onnx_matches_torch(minilm_bundle, minilm, no_text_cache):
    """One batch of texts of very different lengths (padding inside the batch, truncation
    at 256 tokens) gives the torch space's vectors to 1e-4."""
    onnx = text_space_for_bundle(minilm_bundle, device="cpu")
    assert isinstance(onnx, OnnxTextSpace) and onnx.providers == ["CPUExecutionProvider"]
    assert (onnx.name, onnx.dim, onnx.has_images) == ("minilm", 384, False)
    got, expected = onnx.embed_text(TEXTS), minilm.embed_text(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-2  # the tolerance is far below what separates texts
    # alone (batch 1, no padding) as in the batch
    for i in (0, 5):
        assert np.abs(onnx.embed_text([TEXTS[i]])[0] - got[i]).max() <= 1e-5


def test_minilm_tokenizer_matches_transformers(minilm_bundle, minilm):
    tokenizer, _ = minilm._load()
    space = text_space_for_bundle(minilm_bundle, device="cpu")
    ours = [e.ids for e in space.tokenizer.encode_batch(TEXTS)]
    theirs = tokenizer(TEXTS, padding=True, truncation=True, max_length=256)["input_ids"]
    assert ours == theirs
    assert len(ours[-1]) == 256 and ours[-1][-1] == tokenizer.sep_token_id  # truncated, [SEP] last


def test_minilm_semantics_survive_the_export(minilm_bundle, no_text_cache):
    e = text_space_for_bundle(minilm_bundle).embed_prompts(["chair", "car"])
    a_chair, a_car = text_space_for_bundle(minilm_bundle).embed_text(["a wooden chair", "a red sports car"])
    assert e[0] @ a_chair > e[0] @ a_car and e[1] @ a_car > e[1] @ a_chair


# -- the bundle ------------------------------------------------------------------------

def test_bundle_json_records_the_text_tower(minilm_bundle, minilm):
    meta = json.loads((minilm_bundle.path / BUNDLE_FILE).read_text())
    shipped = json.loads((core.bundle.SHIPPED_BUNDLE / BUNDLE_FILE).read_text())
    assert meta["format_version"] == 1
    assert {k: v for k, v in meta.items() if k != "text"} == shipped  # everything else as it was
    text = meta["text"]
    assert (text["onnx"], text["tokenizer"]) == ("text/text.onnx", "text/tokenizer.json")
    assert text["cache_key"] == minilm.cache_key == "minilm"
    assert minilm_bundle.has_text and minilm_bundle.text_file("onnx").stat().st_size > 50e6
    assert sorted(p.name for p in (minilm_bundle.path / "text").iterdir()) == ["text.onnx", "tokenizer.json"]
    assert not [p for p in minilm_bundle.path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_bundle_without_a_text_tower_falls_back_to_torch(tiny_bundle):
    bundle = read_bundle(tiny_bundle.path, warn_untrained=False)
    assert not bundle.has_text and "text" not in bundle.to_json()
    with pytest.raises(BundleError, match="add-text"):
        bundle.text_file("onnx")
    assert text_space_for_bundle(tiny_bundle.path) is load_space("minilm")


def test_a_broken_text_entry_is_a_bundle_error(minilm_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(minilm_bundle.path, dst)
    meta = json.loads((dst / BUNDLE_FILE).read_text())
    (dst / BUNDLE_FILE).write_text(json.dumps({**meta, "text": {"onnx": "text/text.onnx"}}))
    with pytest.raises(BundleError, match="malformed"):
        read_bundle(dst)
    (dst / BUNDLE_FILE).write_text(json.dumps(meta))
    (dst / "text" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json"):
        read_bundle(dst)


def test_the_shipped_bundle_is_left_as_installed():
    with pytest.raises(BundleError, match="add-text default --out"):
        add_text_tower(core.bundle.SHIPPED_BUNDLE)
    assert not (core.bundle.SHIPPED_BUNDLE / "text").exists()


def test_loaded_once_per_process(minilm_bundle):
    assert text_space_for_bundle(minilm_bundle.path) is text_space_for_bundle(minilm_bundle)


def test_onnx_and_torch_share_the_text_cache(minilm_bundle, minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("ULIP2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULIP2_TEXT_CACHE", raising=False)
    texts = ["a teapot", "a lamp on a desk"]
    from_onnx = text_space_for_bundle(minilm_bundle).embed_text(texts)
    cached = TextCache().get_many(minilm.cache_key, texts)
    np.testing.assert_array_equal(np.stack([cached[t] for t in texts]), from_onnx)
    monkeypatch.setenv("ULIP2_TEXT_CACHE", "0")
    assert np.abs(minilm.embed_text(texts) - from_onnx).max() <= 1e-4


def test_no_torch_in_the_process(minilm_bundle, minilm, no_text_cache):
    """What Blender does: a fresh interpreter embeds texts from the bundle alone, and torch,
    transformers and open_clip are never imported."""
    code = (
        "import json, sys\n"
        "from core.spaces import text_space_for_bundle\n"
        f"space = text_space_for_bundle({str(minilm_bundle.path)!r})\n"
        "vectors = space.embed_text(sys.argv[1:])\n"
        "print(json.dumps({'type': type(space).__name__, 'vectors': vectors.tolist(),\n"
        "                  'loaded': [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules]}))\n"
    )
    texts = TEXTS[:3]
    out = subprocess.run([sys.executable, "-c", code, *texts], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "ULIP2_TEXT_CACHE": "0"}, check=True)
    result = json.loads(out.stdout)
    assert result["type"] == "OnnxTextSpace" and result["loaded"] == []
    assert np.abs(np.array(result["vectors"]) - minilm.embed_text(texts)).max() <= 1e-4
