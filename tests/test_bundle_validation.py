"""Lying bundles are refused when opened (core/bundle.py read_bundle): each case starts from a
real exported bundle (the session's pointbert-tiny one: random weights, minilm space, fp32 +
fp16, 512 points of 6 channels -> 384-d) copied into tmp_path, then made to lie in its
bundle.json or its ONNX. Every refusal is one Ulip2Error line naming the file or field."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from core.bundle import BUNDLE_FILE, SHIPPED_BUNDLE, read_bundle
from core.errors import Ulip2Error
from core.export import INPUT_NAME, OUTPUT_NAME, export_bundle, export_module, export_onnx
from core.models import create_encoder, get_config
from core.runtime import PointEncoder


@pytest.fixture
def copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, dst)
    return dst


def _edit(bundle, change):
    """Rewrite bundle.json as change(meta) leaves it."""
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    change(meta)
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))


def _refused(bundle, match):
    with pytest.raises(Ulip2Error, match=match) as exc:
        read_bundle(bundle, warn_untrained=False)
    assert "\n" not in str(exc.value) and "re-export it" in str(exc.value)
    return str(exc.value)


def test_the_shipped_and_exported_bundles_open(tiny_bundle):
    assert read_bundle(SHIPPED_BUNDLE).dim == 384
    assert read_bundle(tiny_bundle.path, warn_untrained=False).files == tiny_bundle.bundle.files


@pytest.mark.parametrize("content", [b"", b"not an onnx model\x00\xff" * 100], ids=["empty", "junk"])
def test_an_onnx_file_that_does_not_load_is_refused(copy, content):
    (copy / "encoder.onnx").write_bytes(content)
    message = _refused(copy, "not an encoder onnxruntime loads")
    assert str(copy.resolve() / "encoder.onnx") in message


@pytest.mark.parametrize("field, name", [
    ("fp32", "../../../../etc/passwd"),
    ("fp32", "/etc/passwd"),
    ("weights", "/etc/hostname"),
    ("fp16", "../bundle/../../encoder.fp16.onnx"),
])
def test_file_names_leaving_the_bundle_are_refused(copy, field, name):
    _edit(copy, lambda meta: meta["files"].update({field: name}))
    message = _refused(copy, f'"files.{field}" is .*outside the bundle folder')
    assert str(copy / BUNDLE_FILE) in message


def test_prompts_and_text_names_leaving_the_bundle_are_refused(copy):
    _edit(copy, lambda meta: meta.update(prompts="../prompts.npz"))
    _refused(copy, '"prompts" is .*outside')
    _edit(copy, _set("prompts", None))
    _edit(copy, _set("text", {"onnx": "/tmp/text.onnx", "tokenizer": "text/tokenizer.json"}))
    _refused(copy, '"text.onnx" is .*outside')


def test_a_link_out_of_the_bundle_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    (copy / "encoder.onnx").rename(outside)
    os.symlink(outside, copy / "encoder.onnx")
    _refused(copy, '"files.fp32" is .*outside')


def test_a_file_name_that_is_no_regular_file_is_refused(copy):
    (copy / "sub").mkdir()
    _edit(copy, lambda meta: meta["files"].update(fp32="sub"))
    _refused(copy, "incomplete, missing sub")


def _set(key, value, where=None):
    """A lie: bundle.json's `key` (under `where`, e.g. "encoder") set to `value`, None removes it."""
    def change(meta):
        entry = meta[where] if where else meta
        if value is None:
            del entry[key]
        else:
            entry[key] = value
    return change


def _both(key, config_key, value, where=None):
    """A consistent lie: the bundle's field and its encoder config's say `value` alike."""
    def change(meta):
        _set(key, value, where)(meta)
        meta["encoder"][config_key] = value
    return change


@pytest.mark.parametrize("change, match", [
    (_set("num_points", 2_000_000_000), r'"num_points" is 2000000000, outside 1\.\.65536'),
    (_set("channels", 9), '"channels" is 9'),
    (_set("num_group", None, "encoder"), 'no "encoder.num_group"'),
    (_set("num_group", 513, "encoder"), r'"encoder.num_group" is 513, outside 1\.\.512'),
    (_set("group_size", "16", "encoder"), '"encoder.group_size" is .16., not a whole number'),
    (_set("encoder", None), 'no "encoder"'),
    (_set("dim", 512, "space"), '"encoder.embed_dim" is 384 but the bundle says 512'),
    (_set("trained", "yes"), '"trained" is .yes., not true or false'),
    (_set("fp32", None, "files"), 'no "files.fp32"'),
])
def test_lying_fields_are_refused(copy, change, match):
    _edit(copy, change)
    _refused(copy, "malformed bundle description.*" + match)


@pytest.mark.parametrize("change, match", [
    (_both("channels", "in_channels", 3), "the graph takes 6 channels per point but bundle.json says channels 3"),
    (_both("dim", "embed_dim", 512, "space"), r"gives embeddings \(batch, 384\) but bundle.json says space dim 512"),
    (_both("dim", "embed_dim", 128, "space"), "says space dim 128"),
    (_both("num_points", "num_points", 1024), None),  # the graph's point axis is dynamic: any count fits
])
def test_fields_the_graph_contradicts_are_refused(copy, change, match):
    _edit(copy, change)
    if match is None:
        assert read_bundle(copy, warn_untrained=False).num_points == 1024
    else:
        assert "encoder.onnx" in _refused(copy, match)


def _replace_encoder(bundle, export):
    """Put the graph `export(path)` writes in as the bundle's only encoder."""
    (bundle / "encoder.fp16.onnx").unlink()
    _edit(bundle, lambda meta: meta["files"].pop("fp16"))
    export(bundle / "encoder.onnx")


def test_a_graph_for_other_channels_is_refused(copy, tmp_path, rng):
    """A real 3-channel (xyz) bundle opens and embeds; its graph under a 6-channel bundle.json does not."""
    xyz = create_encoder(dataclasses.replace(get_config("pointbert-tiny"), in_channels=3), embed_dim=384, seed=0)
    bundle = export_bundle(tmp_path / "xyz", model=xyz, space="minilm")
    assert bundle.channels == 3
    encoder = PointEncoder(read_bundle(bundle.path, warn_untrained=False), device="cpu")
    assert encoder.embed_points(rng.random((1, 512, 6), dtype="float32")).shape == (1, 384)
    _replace_encoder(copy, lambda path: export_onnx(xyz, path, 512))
    _refused(copy, "the graph takes 3 channels per point but bundle.json says channels 6")


def test_a_graph_with_a_fixed_batch_is_refused(copy, tiny_bundle):
    example = {INPUT_NAME: torch.rand(1, 512, 6)}
    _replace_encoder(copy, lambda path: export_module(tiny_bundle.model, example, path, {}))
    _refused(copy, r"fixed batch of 1 \(input \(1, 512, 6\)\); ulip2 needs a dynamic batch axis")


def test_a_graph_with_a_fixed_point_count_must_match_num_points(copy, tiny_bundle):
    example = {INPUT_NAME: torch.rand(2, 512, 6)}
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    _replace_encoder(copy, lambda path: export_module(tiny_bundle.model, example, path, axes))
    assert read_bundle(copy, warn_untrained=False).num_points == 512
    _edit(copy, _both("num_points", "num_points", 1024))
    _refused(copy, "the graph takes 512 points but bundle.json says num_points 1024")


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


def test_the_cli_says_a_lying_bundle_in_one_line(copy, tmp_path):
    (copy / "encoder.onnx").write_bytes(b"junk")
    result = _cli("info", copy)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "encoder.onnx" in result.stderr and "Traceback" not in result.stderr
    _edit(copy, lambda meta: meta["files"].update(fp32="../../../../etc/passwd"))
    result = _cli("embed", tmp_path / "box.obj", "--bundle", copy)  # the bundle is refused before any mesh is read
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and '"files.fp32"' in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
