"""Checkpoint loading (core/models/checkpoint.py): the released ULIP-2 layout and ulip2's own
safetensors files, loaded strictly. The checkpoints are built here with random values in the
exact layout ULIP-2's code writes (models/ULIP_models.py: ULIP2_WITH_OPENCLIP, saved by main.py)."""

import argparse

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.models import create_encoder, get_config
from core.models.checkpoint import load_encoder_weights, read_checkpoint


def ulip_point_encoder_shapes(cfg) -> dict[str, tuple]:
    """Names and shapes of ULIP's PointTransformer_Colored state dict, written out from its
    module tree (not read from our model): Conv1d weights are (out, in, 1), BatchNorm1d keeps
    running stats and a scalar num_batches_tracked, qkv has no bias."""
    d, e, c = cfg.trans_dim, cfg.encoder_dims, cfg.in_channels

    def bn(prefix, n):
        return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}

    shapes = {
        "cls_token": (1, 1, d),
        "cls_pos": (1, 1, d),
        "encoder.first_conv.0.weight": (128, c, 1),
        "encoder.first_conv.0.bias": (128,),
        **bn("encoder.first_conv.1", 128),
        "encoder.first_conv.3.weight": (256, 128, 1),
        "encoder.first_conv.3.bias": (256,),
        "encoder.second_conv.0.weight": (512, 512, 1),
        "encoder.second_conv.0.bias": (512,),
        **bn("encoder.second_conv.1", 512),
        "encoder.second_conv.3.weight": (e, 512, 1),
        "encoder.second_conv.3.bias": (e,),
        "reduce_dim.weight": (d, e),
        "reduce_dim.bias": (d,),
        "pos_embed.0.weight": (128, 3),
        "pos_embed.0.bias": (128,),
        "pos_embed.2.weight": (d, 128),
        "pos_embed.2.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    for i in range(cfg.depth):
        p = f"blocks.blocks.{i}"
        shapes |= {
            f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
            f"{p}.attn.qkv.weight": (3 * d, d),
            f"{p}.attn.proj.weight": (d, d), f"{p}.attn.proj.bias": (d,),
            f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
            f"{p}.mlp.fc1.weight": (4 * d, d), f"{p}.mlp.fc1.bias": (4 * d,),
            f"{p}.mlp.fc2.weight": (d, 4 * d), f"{p}.mlp.fc2.bias": (d,),
        }
    return shapes


def release_state(cfg, seed=0) -> dict[str, torch.Tensor]:
    """A ULIP-2 release `state_dict` (DDP 'module.' names) with random values for `cfg`."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in ulip_point_encoder_shapes(cfg).items():
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(1234, dtype=torch.long)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        else:
            value = torch.randn(shape, generator=gen) * 0.05
        state[f"module.point_encoder.{name}"] = value
    state["module.pc_projection"] = torch.randn(cfg.feat_dim, cfg.embed_dim, generator=gen) * cfg.embed_dim**-0.5
    state["module.logit_scale"] = torch.tensor(4.6052)
    state["module.open_clip_model.logit_scale"] = torch.tensor(4.6052)
    state["module.open_clip_model.text_projection"] = torch.randn(16, 8, generator=gen)
    state["module.open_clip_model.visual.proj"] = torch.randn(16, 8, generator=gen)
    return state


def save_release(path, state, **extra):
    torch.save({"epoch": 10, "state_dict": state, **extra}, path)
    return path


def check_loaded(model, state, points):
    own = model.state_dict()
    for name in ulip_point_encoder_shapes(model.config):
        assert torch.equal(own[name], state[f"module.point_encoder.{name}"]), name
    projection = state["module.pc_projection"]
    assert torch.equal(model.projection.weight, projection.T)
    model.eval()
    with torch.no_grad():
        # ULIP-2's encode_pc is features @ pc_projection; ulip2's output is that, normalised
        expected = torch.nn.functional.normalize(model.features(points) @ projection, dim=-1)
        torch.testing.assert_close(model(points), expected, atol=1e-5, rtol=1e-5)


def test_state_dict_names_are_ulips_for_depth_18():
    model = create_encoder("ulip2-pointbert")
    cfg = model.config
    assert cfg.depth == 18
    expected = ulip_point_encoder_shapes(cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "projection.weight"}
    assert set(own) == set(expected)
    assert own == expected
    assert len([k for k in expected if k.startswith("blocks.blocks.")]) == 18 * 11


@pytest.mark.parametrize("config", ["pointbert-tiny", pytest.param("ulip2-pointbert", marks=pytest.mark.models)])
def test_release_checkpoint_loads_every_tensor(tmp_path, config):
    """Full-size for ulip2-pointbert: about 134 MB written to tmp and read back."""
    cfg = get_config(config)
    state = release_state(cfg)
    path = save_release(tmp_path / "ulip2.pt", state)
    model = create_encoder(config, seed=1)
    load_encoder_weights(model, path)
    points = torch.rand(2, max(cfg.num_group * 2, 512), 6)
    check_loaded(model, state, points)


def test_release_checkpoint_as_ulips_main_saves_it(tmp_path):
    """ULIP's main.py saves epoch, state_dict, optimizer, scaler, best_acc1 and args (an
    argparse.Namespace, which its own test code reads back): all of it must be readable."""
    cfg = get_config("pointbert-tiny")
    state = release_state(cfg)
    args = argparse.Namespace(model="ULIP2_PointBERT_Colored", npoints=10000, lr=3e-3, betas=(0.9, 0.98),
                              output_dir="./outputs", wandb=False, gpu=0, resume="")
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
                 "param_groups": [{"lr": 3e-3, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.1,
                                   "amsgrad": False, "params": [0]}]}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    path = save_release(tmp_path / "ulip2.pt", state, optimizer=optimizer, scaler=scaler, best_acc1=50.6, args=args)
    model = create_encoder("pointbert-tiny", seed=1)
    load_encoder_weights(model, path)
    check_loaded(model, state, torch.rand(1, 512, 6))


def test_release_checkpoint_without_open_clip_part_loads(tmp_path):
    cfg = get_config("pointbert-tiny")
    state = {k: v for k, v in release_state(cfg).items() if not k.startswith("module.open_clip_model.")}
    model = create_encoder("pointbert-tiny", seed=1)
    load_encoder_weights(model, save_release(tmp_path / "a.pt", state))
    check_loaded(model, state, torch.rand(1, 512, 6))


def _load_error(tmp_path, state, config="pointbert-tiny") -> str:
    path = save_release(tmp_path / "bad.pt", state)
    with pytest.raises(CheckpointError) as err:
        load_encoder_weights(create_encoder(config), path)
    return str(err.value)


_BAD_RELEASES = {
    # name: (keys to delete, keys to add, words the error must contain)
    "missing key": (["module.point_encoder.blocks.blocks.1.attn.proj.bias"], {}, ["missing", "blocks.blocks.1.attn.proj.bias"]),
    "missing projection": (["module.pc_projection"], {}, ["projection.weight"]),
    "extra encoder key": ([], {"module.point_encoder.cls_head_finetune.0.weight": (4, 4)},
                          ["unexpected", "cls_head_finetune.0.weight"]),
    "unknown top-level key": ([], {"module.image_projection": (4, 4)}, ["image_projection"]),
    "wrong shape": ([], {"module.point_encoder.reduce_dim.weight": (7, 7)}, ["reduce_dim.weight", "(7, 7)"]),
}


@pytest.mark.parametrize("case", list(_BAD_RELEASES))
def test_bad_release_checkpoint_names_the_key(tmp_path, case):
    removed, added, words = _BAD_RELEASES[case]
    state = release_state(get_config("pointbert-tiny"))
    for key in removed:
        del state[key]
    state.update({key: torch.zeros(shape) for key, shape in added.items()})
    message = _load_error(tmp_path, state)
    for word in words:
        assert word in message


def test_tiny_checkpoint_into_full_config_names_shapes(tmp_path):
    """A checkpoint of one size loaded into another: every mismatch is a CheckpointError."""
    message = _load_error(tmp_path, release_state(get_config("pointbert-tiny")), config="ulip2-pointbert")
    assert "ulip2-pointbert" in message
    assert "shape" in message or "missing" in message


def test_failed_load_leaves_the_model_untouched(tmp_path):
    state = release_state(get_config("pointbert-tiny"))
    state["module.point_encoder.norm.weight"] = torch.zeros(3)
    model = create_encoder("pointbert-tiny", seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_encoder_weights(model, save_release(tmp_path / "bad.pt", state))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,content", [
    ("junk.pt", b"this is not a checkpoint\n" * 10),
    ("junk.safetensors", b"\x00\x01garbage" * 10),
    ("empty.pt", b""),
])
def test_non_checkpoint_files_are_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_encoder_weights(create_encoder("pointbert-tiny"), path)


def test_pickled_non_state_dicts_are_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"state_dict": {"a": 1.0}}, tmp_path / "floats.pt")
    for name in ("list.pt", "floats.pt"):
        with pytest.raises(CheckpointError, match="expected a state dict"):
            read_checkpoint(tmp_path / name)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder_weights(create_encoder("pointbert-tiny"), tmp_path / "nowhere.pt")


def test_pickled_code_is_not_run(tmp_path):
    """Checkpoints are read with weights_only: a pickle that would call a function is refused."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    source = create_encoder("pointbert-tiny", seed=5).eval()
    save_file(source.state_dict(), str(tmp_path / "encoder.safetensors"))
    target = create_encoder("pointbert-tiny", seed=6).eval()
    load_encoder_weights(target, tmp_path / "encoder.safetensors")
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    points = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 512, 6)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(target(points), source(points), atol=0, rtol=0)


def test_safetensors_with_wrong_keys_is_refused(tmp_path):
    from safetensors.torch import save_file

    state = create_encoder("pointbert-tiny").state_dict()
    state.pop("norm.bias")
    save_file(state, str(tmp_path / "encoder.safetensors"))
    with pytest.raises(CheckpointError, match="norm.bias"):
        load_encoder_weights(create_encoder("pointbert-tiny"), tmp_path / "encoder.safetensors")
