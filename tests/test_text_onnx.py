"""Text towers in bundles (core.export.add_text_tower) run by onnxruntime without torch
(core.spaces.text_encoder): parity with the torch spaces, the bundle.json entry,
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
from core.spaces.onnx_text import OnnxTextSpace
from core.spaces import load_space, prompt_vectors, text_encoder
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
    onnx = text_encoder(minilm_bundle, device="cpu")
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
    space = text_encoder(minilm_bundle, device="cpu")
    ours = [e.ids for e in space.tokenizer.encode_batch(TEXTS)]
    theirs = tokenizer(TEXTS, padding=True, truncation=True, max_length=256)["input_ids"]
    assert ours == theirs
    assert len(ours[-1]) == 256 and ours[-1][-1] == tokenizer.sep_token_id  # truncated, [SEP] last


def test_minilm_semantics_survive_the_export(minilm_bundle, no_text_cache):
    e = text_encoder(minilm_bundle).embed_prompts(["chair", "car"])
    a_chair, a_car = text_encoder(minilm_bundle).embed_text(["a wooden chair", "a red sports car"])
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


def test_a_bundle_without_a_text_tower_gets_the_cached_one_or_in_open_clip_torch(tiny_bundle, clip_bundle, tmp_path):
    """A minilm bundle without a tower embeds through the tower cached for minilm (built in
    this session's temporary cache); an open_clip bundle without one through its torch space
    (its towers are gigabytes, so none is cached)."""
    bundle = read_bundle(tiny_bundle.path, warn_untrained=False)
    assert not bundle.has_text and "text" not in bundle.to_json()
    with pytest.raises(BundleError, match="add-text"):
        bundle.text_file("onnx")
    encoder = text_encoder(tiny_bundle.path, device="cpu")
    assert isinstance(encoder, OnnxTextSpace) and encoder.cache_key == "minilm"
    assert text_encoder(bundle, device="cpu") is encoder
    clip, space = clip_bundle
    bare = tmp_path / "clip-without-text"
    shutil.copytree(clip.path, bare)
    meta = json.loads((bare / BUNDLE_FILE).read_text())
    meta.pop("text")
    (bare / BUNDLE_FILE).write_text(json.dumps(meta))
    assert text_encoder(bare) is space


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


@pytest.mark.models
def test_float16_weights_halve_the_tower_and_keep_real_texts_within_1e_3_cosine(minilm_bundle, tmp_path,
                                                                              monkeypatch):
    """The Blender extension carries minilm's tower with float16 weights (float32 arithmetic):
    half of its 90 MB, and vectors within 1e-3 cosine of float32's, measured on the build's
    469 check texts (2.4e-7 here) and on LVIS prompts it never saw. Where a tower moves more
    than allowed, the float32 one stays, with a warning."""
    import blender_addon.build
    from blender_addon.build import cosine_gap, halve_text_tower
    from core.spaces.vocabularies import load_vocabulary, prompt_name
    from core.spaces.vocabularies import ULIP_TEMPLATES

    shutil.copytree(minilm_bundle.path, tmp_path / "half")
    halved = halve_text_tower(tmp_path / "half")
    assert halved.text["weights"] == "float16" and 0 < halved.text["cosine_gap"] < 1e-3
    size = minilm_bundle.text_file("onnx").stat().st_size
    assert halved.text_file("onnx").stat().st_size < 0.51 * size
    labels = load_vocabulary("lvis")[1][::20]
    prompts = [t.format(prompt_name(label)) for label in labels for t in ULIP_TEMPLATES[::16]]  # 232 prompts
    gap = cosine_gap(OnnxTextSpace.of_bundle(minilm_bundle, device="cpu")._encode_text(prompts),
                     OnnxTextSpace.of_bundle(halved, device="cpu")._encode_text(prompts))
    assert gap < 1e-3, gap

    monkeypatch.setattr(blender_addon.build, "FP16_MAX_COSINE_GAP", 0.0)
    shutil.copytree(minilm_bundle.path, tmp_path / "kept")
    with pytest.warns(UserWarning, match="stays float32"):
        kept = halve_text_tower(tmp_path / "kept")
    assert "weights" not in kept.text and kept.text_file("onnx").stat().st_size == size
    assert sorted(p.name for p in (tmp_path / "kept" / "text").iterdir()) == ["text.onnx", "tokenizer.json"]


def test_loaded_once_per_process(minilm_bundle):
    assert text_encoder(minilm_bundle.path) is text_encoder(minilm_bundle)


def test_onnx_and_torch_share_the_text_cache(minilm_bundle, minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("ULIP2_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ULIP2_TEXT_CACHE", raising=False)
    texts = ["a teapot", "a lamp on a desk"]
    from_onnx = text_encoder(minilm_bundle).embed_text(texts)
    cached = TextCache().get_many(minilm.cache_key, texts)
    np.testing.assert_array_equal(np.stack([cached[t] for t in texts]), from_onnx)
    monkeypatch.setenv("ULIP2_TEXT_CACHE", "0")
    assert np.abs(minilm.embed_text(texts) - from_onnx).max() <= 1e-4


def test_no_torch_in_the_process(minilm_bundle, minilm, no_text_cache):
    """What Blender does: a fresh interpreter embeds texts from the bundle alone, and torch,
    transformers and open_clip are never imported."""
    code = (
        "import json, sys\n"
        "from core.spaces import text_encoder\n"
        f"space = text_encoder({str(minilm_bundle.path)!r})\n"
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


@pytest.mark.models
def test_a_bundle_without_a_tower_builds_one_into_the_cache_once_then_needs_no_torch(minilm, tmp_path):
    """The shipped default carries no text tower: the first text_encoder builds minilm's into
    the user cache (saying so), a fresh process then embeds from it with torch never
    imported, and a damaged cache entry is built again rather than trusted."""
    env = {**os.environ, "ULIP2_CACHE_DIR": str(tmp_path / "cache"), "ULIP2_TEXT_CACHE": "0"}
    code = (
        "import json, sys\n"
        "from core.spaces import text_encoder\n"
        "space = text_encoder('default', device='cpu')\n"
        "vectors = space.embed_text(sys.argv[1:])\n"
        "print(json.dumps({'type': type(space).__name__, 'vectors': vectors.tolist(),\n"
        "                  'loaded': [m for m in ('torch', 'transformers') if m in sys.modules]}))\n"
    )
    texts = TEXTS[:3]

    def run():
        done = subprocess.run([sys.executable, "-c", code, *texts], cwd=REPO, capture_output=True, text=True,
                              env=env, check=True, timeout=600)
        return json.loads(done.stdout), done.stderr

    first, said = run()
    assert first["type"] == "OnnxTextSpace" and "building the minilm text tower" in said
    towers = list((tmp_path / "cache" / "text_towers").iterdir())
    assert len(towers) == 1 and {f.name for f in towers[0].iterdir()} == {"text.onnx", "tokenizer.json", "tower.json"}
    second, said = run()
    assert second["type"] == "OnnxTextSpace" and second["loaded"] == [] and "building" not in said
    expected = minilm.embed_text(texts)
    for result in (first, second):
        assert np.abs(np.array(result["vectors"]) - expected).max() <= 1e-4
    (towers[0] / "tower.json").write_text("{not json")
    third, said = run()
    assert "building the minilm text tower" in said and third["type"] == "OnnxTextSpace"


# -- open_clip -------------------------------------------------------------------------

CLIP_TEXTS = [
    "a chair", "A Wooden CHAIR, with arm-rests!!", "it's they're we've I'm you'll he'd", "don\u2019t \u201cquote\u201d me",
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e", "cafe\u0301 (decomposed)", "\u00dcn\u00efc\u00f6d\u00e9 \u00c0\u00c9\u00ce Stra\u00dfe \u0130stanbul",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33", "\ufb01ne \ufb02owers", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u041a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u0430 \u0639\u0631\u0628\u0649",
    "emoji \U0001fa91\U0001f697 ok", "tabs\tand\nnew lines   and  spaces ", "", "   ", "1234567 3.14 $5 50% #1",
    "Tom &amp; Jerry &lt;b&gt;", "CamelCaseWords snake_case_names mixed-123-numbers4you", "a\x00b\ufeffc",
    "x" * 300, " ".join(["a wooden chair"] * 60),
]


def test_clip_tokenizer_matches_open_clip(tmp_path):
    """The tokenizer.json written for open_clip spaces gives open_clip's ids: cleaning,
    capitals, unicode, punctuation, and long texts cut to 77 with eot last."""
    import open_clip
    from tokenizers import Tokenizer

    from core.spaces.openclip import clip_tokenizer

    reference = open_clip.get_tokenizer("ViT-B-32")
    clip_tokenizer("ViT-B-32", reference).save(str(tmp_path / "tokenizer.json"))
    fast = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # what the runtime reads
    got = np.array([e.ids for e in fast.encode_batch(CLIP_TEXTS)])
    expected = reference(CLIP_TEXTS).numpy()
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (len(CLIP_TEXTS), 77)
    sot, eot = reference.sot_token_id, reference.eot_token_id
    assert (got[:, 0] == sot).all()
    assert got[-1, -1] == eot and got[-2, -1] == eot  # truncated: eot kept last
    assert got[0, 3] == eot and (got[0, 4:] == 0).all()  # "a chair": sot a chair eot, then padding 0


def test_clip_tokenizer_refuses_other_tokenizers():
    from open_clip.tokenizer import SimpleTokenizer

    from core.errors import SpaceError
    from core.spaces.openclip import clip_tokenizer

    with pytest.raises(SpaceError, match="'some-arch'.*cannot be exported"):
        clip_tokenizer("some-arch", SimpleTokenizer(clean="canonicalize"))


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CLIP_SPACE = "openclip:ulip2-test-tiny-text:none"


@pytest.fixture(scope="module")
def clip_bundle(tmp_path_factory):
    """A bundle in a tiny open_clip space with RANDOM weights (seeded), its text tower exported
    by export_bundle(text=True) from the space object this process loaded, so torch and ONNX
    share the weights: parity and plumbing, no meaning."""
    import open_clip
    import torch

    from core.export import export_bundle
    from core.models import create_encoder

    config = tmp_path_factory.mktemp("clip-configs") / "ulip2-test-tiny-text.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="untrained"):
        space = load_space(CLIP_SPACE)
    out = tmp_path_factory.mktemp("text-bundles") / "clip"
    bundle = export_bundle(out, model=create_encoder("pointbert-tiny", embed_dim=32, seed=0), space=CLIP_SPACE, text=True)
    return bundle, space


def test_openclip_random_weights_onnx_matches_torch(clip_bundle):
    bundle, torch_space = clip_bundle
    assert bundle.has_text and read_bundle(bundle.path, warn_untrained=False).text == bundle.text
    assert bundle.text["cache_key"] is None  # random weights are never cached, in either runtime
    onnx = text_encoder(bundle.path, device="cpu")
    assert isinstance(onnx, OnnxTextSpace) and onnx.cache_key is None and onnx.dim == 32
    assert [i.name for i in onnx.session.get_inputs()] == ["input_ids"]
    got, expected = onnx.embed_text(CLIP_TEXTS), torch_space.embed_text(CLIP_TEXTS)
    assert got.shape == (len(CLIP_TEXTS), 32)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(got[0] - got[1]).max() > 1e-3
    assert np.abs(onnx.embed_text(CLIP_TEXTS[:1]) - expected[:1]).max() <= 1e-4  # batch 1


# -- the command line ------------------------------------------------------------------

@pytest.mark.models
def test_cli_models_add_text_copies_the_default(tmp_path, capsys, monkeypatch, minilm, no_text_cache):
    from cli.main import main

    monkeypatch.delenv("ULIP2_BUNDLE", raising=False)
    out = tmp_path / "default-text"
    assert main(["models", "add-text", "default", "--out", str(out), "--prompts", "modelnet40"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out.resolve()) and printed["text"]["onnx"] == "text/text.onnx"
    assert printed["prompts"] == "prompts.npz" and "prompts" not in printed["text"]
    assert not (core.bundle.SHIPPED_BUNDLE / "text").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {p.name for p in core.bundle.SHIPPED_BUNDLE.iterdir()} | {"text", "prompts.npz"})
    vectors = text_encoder(out).embed_text(TEXTS[:2])
    assert np.abs(vectors - minilm.embed_text(TEXTS[:2])).max() <= 1e-4
    assert main(["info", str(out)]) == 0
    assert "text tower text/text.onnx + text/tokenizer.json" in capsys.readouterr().out
    assert main(["models", "add-text", "default", "--out", str(out)]) == 2  # not over a bundle unasked
    assert "not empty" in capsys.readouterr().err


def test_cli_export_with_text(clip_bundle, tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "b"
    assert main(["export", "--out", str(out), "--config", "pointbert-tiny", "--space", CLIP_SPACE, "--text",
                 "--prompts"]) == 0  # --prompts alone: no prompt ensembles carried
    assert json.loads(capsys.readouterr().out)["text"]["tokenizer"] == "text/tokenizer.json"
    assert read_bundle(out, warn_untrained=False).has_text and read_bundle(out).prompts is None
    assert main(["info", str(core.bundle.SHIPPED_BUNDLE)]) == 0
    assert "text tower none" in capsys.readouterr().out


@pytest.mark.models
def test_carried_prompt_ensembles_replace_the_tower_and_match_torch(tmp_path, monkeypatch, minilm, no_text_cache):
    """A bundle made with the ModelNet40 prompt ensembles answers prompt_vectors for those
    classes without running the tower, equal to the torch space's ensembles; a class it does
    not carry, or other templates, are embedded as before."""
    from core.spaces.vocabularies import load_vocabulary, prompt_name

    path = tmp_path / "with-prompts"
    shutil.copytree(core.bundle.SHIPPED_BUNDLE, path)
    bundle = add_text_tower(path, prompts=["modelnet40"])
    classes = [prompt_name(c) for c in load_vocabulary("modelnet40")[1]]
    space = text_encoder(bundle)
    expected = minilm.embed_prompts(classes[:5] + ["teapot"])
    calls = []
    encode = space._encode_text
    monkeypatch.setattr(space, "_encode_text", lambda texts: calls.append(len(texts)) or encode(texts))
    got = prompt_vectors(bundle, classes[:5] + ["teapot"])
    assert np.abs(got - expected).max() <= 1e-4
    assert sum(calls) == 64, "only the class not carried (teapot) was embedded: 64 templates"
    calls.clear()
    assert np.abs(prompt_vectors(bundle, classes[:5]) - expected[:5]).max() <= 1e-4
    assert sum(calls) == 0, "every class carried: nothing embedded"
    prompt_vectors(bundle, classes[:2], templates=["a {}"])
    assert sum(calls) == 2, "other templates: the carried ensembles do not apply"
