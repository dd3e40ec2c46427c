"""Captioners: metadata for real; blip/blip2 mechanics (generate -> rank -> select) with tiny
random models saved to a local folder; the clear stop when blip2's weights cannot be had."""

import numpy as np
import pytest
from PIL import Image

from core.captioners import CaptionerError, caption_views, load_captioner, rank
from core.captioners.metadata import clean_name, dominant_colours, shape_words
from core.spaces import Space, load_space


def render_like(colour, share=0.5, size=32):
    """An RGBA 'render': a square of `colour` covering `share` of a transparent image."""
    image = np.zeros((size, size, 4), np.uint8)
    side = int(size * share**0.5)
    image[:side, :side] = (*colour, 255)
    return Image.fromarray(image, "RGBA")


class ColourSpace(Space):
    """A space with an 'image tower' that sees only the mean colour: red images match 'red'."""

    name, dim, has_images, cache_key = "colour-stub", 3, True, None

    def _encode_text(self, texts):
        return np.array([[1.0, 0.1, 0.1] if "red" in t else [0.1, 0.1, 1.0] if "blue" in t else [0.3, 1.0, 0.3]
                         for t in texts])

    def _encode_images(self, images):
        return np.array([np.asarray(im, np.float32).reshape(-1, 3).mean(axis=0) for im in images])


class FixedCaptioner:
    name, model, vision_model = "fixed", None, True

    def caption(self, images, k, *, facts=None):
        return [["a blue thing", "a red thing", "a green thing"][:k] for _ in images]


def test_metadata_captioner_reads_names_colours_and_size():
    captioner = load_captioner("metadata")
    assert captioner.vision_model is False
    facts = {"name": "Office_Chair.001", "object_names": ["Seat", "Legs"], "material_names": ["OakWood"],
             "dimensions": [0.5, 0.5, 1.2]}
    (candidates,) = captioner.caption([render_like((200, 30, 30))], 10, facts=facts)
    assert candidates[0] == "a red office chair"
    assert len(candidates) == len(set(candidates)) <= 10
    assert any("oak wood" in c for c in candidates) and any("tall, narrow" in c for c in candidates)
    assert any("1.2 m tall" in c for c in candidates)
    assert len(captioner.caption([render_like((200, 30, 30))], 2, facts=facts)[0]) == 2


def test_the_metadata_captioner_counts_the_object_not_the_background_of_a_render():
    """Through caption_views, as triplets build and the corpus's render stage call it: a
    blue object on 30% of a transparent render is blue, not white and blue."""
    block = caption_views(load_captioner("metadata"), load_space("minilm"), [render_like((40, 70, 200), share=0.3)],
                          k=3, facts={"name": "vase"})
    candidates = [c["text"] for c in block["views"][0]["candidates"]]
    assert candidates[0] == "a blue vase", candidates
    assert not any("white" in c for c in candidates)


def test_metadata_measurements():
    assert dominant_colours(render_like((40, 70, 200), share=0.3)) == ["blue"]
    assert dominant_colours(Image.new("RGBA", (4, 4))) == []  # nothing opaque
    assert clean_name("geometry_0") == "" and clean_name("redSofa.003") == "red sofa"
    assert shape_words([2.0, 2.0, 0.1]) == ("flat", "medium-sized")
    assert shape_words([0.1, 0.02, 0.02]) == ("long", "small")


def test_rank_image_text_keeps_top1_per_view():
    views = [render_like((220, 20, 20), share=1.0), render_like((20, 20, 220), share=1.0)]
    block = caption_views(FixedCaptioner(), ColourSpace(), views, k=3)
    assert block["ranking"] == "image-text" and block["space"] == "colour-stub"
    assert [v["caption"] for v in block["views"]] == ["a red thing", "a blue thing"]
    first = block["views"][0]
    assert len(first["candidates"]) == 3 and first["candidates"][first["chosen"]]["text"] == "a red thing"
    assert first["candidates"][1]["score"] == max(c["score"] for c in first["candidates"])


def test_rank_text_only_space_is_consensus():
    space = load_space("minilm")
    rule, scores = rank(space, [None], [["a wooden chair", "a chair made of wood", "a purple elephant"]])
    assert rule == "text-consensus"
    assert int(np.argmin(scores[0])) == 2  # the outlier sample is ranked last


def _tokenizer():
    from transformers import BertTokenizerFast

    from core.spaces.minilm import bundled_model_dir

    return BertTokenizerFast.from_pretrained(bundled_model_dir())


def _tiny_blip2(path):
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, OPTConfig

    tokenizer = _tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, ffn_dim=37, num_attention_heads=4,
                     word_embed_proj_dim=32, max_position_embeddings=64, bos_token_id=tokenizer.cls_token_id,
                     eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                            encoder_hidden_size=32, vocab_size=len(tokenizer)),
        text_config=text.to_dict(), num_query_tokens=4, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)


def _tiny_blip(path):
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _tokenizer()
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=4, encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id))
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(path)


@pytest.mark.models
@pytest.mark.parametrize("name,build", [("blip2", _tiny_blip2), ("blip", _tiny_blip)])
def test_hf_captioners_generate_rank_select(tmp_path, name, build):
    build(tmp_path / name)
    captioner = load_captioner(name, str(tmp_path / name))
    assert captioner.name == name and captioner.model == str(tmp_path / name)
    views = [render_like((220, 20, 20)), render_like((20, 20, 220))]
    candidates = captioner.caption(views, 4)
    assert len(candidates) == 2 and all(1 <= len(view) <= 4 for view in candidates)
    block = caption_views(captioner, ColourSpace(), views, k=4)
    for view, texts in zip(block["views"], candidates):
        scores = [c["score"] for c in view["candidates"]]
        assert view["caption"] == view["candidates"][int(np.argmax(scores))]["text"]
    assert block["vision_model"] is True and block["captioner"] == name


def test_blip2_without_weights_names_the_alternatives():
    with pytest.raises(CaptionerError, match="metadata") as error:
        load_captioner("blip2")
    assert "Salesforce/blip2-opt-6.7b" in str(error.value) and "--captioner blip" in str(error.value)
    with pytest.raises(CaptionerError, match="unknown captioner"):
        load_captioner("gpt")


@pytest.fixture
def recording_hub(unreachable_hub):
    """unreachable_hub, but its port listens: the first line of every request to the hub is
    recorded (in hub.requests) and the connection closed at once, so what is asked is seen,
    and never waited for."""
    import socket
    import threading
    import types

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # so that the loop sees the test end
    hub = types.SimpleNamespace(env={**unreachable_hub, "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}"},
                                requests=[])
    over = threading.Event()

    def serve():
        while not over.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(10)
                try:
                    hub.requests.append(connection.recv(4096).split(b"\r\n")[0].decode(errors="replace"))
                except OSError as exc:
                    hub.requests.append(f"a connection that sent nothing ({exc})")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield hub
    over.set()
    thread.join()
    server.close()


@pytest.mark.models
def test_cached_weights_load_from_the_cache_without_the_hub(tmp_path, recording_hub):
    """A hub id whose weights are in the Hugging Face cache loads from there without asking
    the hub about the model, the hub not marked offline (transformers asked it first, for
    minutes). (huggingface_hub asks it once for its own /api/agent-harnesses list.)"""
    import subprocess
    import sys

    snapshot = tmp_path / "hf" / "hub" / "models--studio--tiny-blip" / "snapshots" / ("0" * 40)
    _tiny_blip(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    done = subprocess.run([sys.executable, "-c", "from core.captioners import load_captioner\n"
                           "print(load_captioner('blip', 'studio/tiny-blip').net.config.vision_config.hidden_size)"],
                          env=recording_hub.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["32"]
    assert [r for r in recording_hub.requests if "tiny-blip" in r or "agent-harnesses" not in r] == []
