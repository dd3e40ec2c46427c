"""The Point-BERT encoder (core/models). Models here have random weights: these tests check
mechanics (sizes, shapes, normalisation, invariances), not what the embeddings mean."""

import numpy as np
import pytest
import torch

from core.errors import Ulip2Error
from core.models import create_encoder, get_config, list_configs
from core.models.config import EncoderConfig


def test_ulip2_pointbert_has_the_papers_parameter_count():
    """ULIP-2's Point-BERT: 32.5M parameters in the point encoder, plus a 768 -> 1280 projection."""
    model = create_encoder("ulip2-pointbert")
    encoder = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("projection."))
    total = sum(p.numel() for p in model.parameters())
    assert abs(encoder - 32.5e6) <= 0.1e6, encoder
    assert total - encoder == 768 * 1280
    assert abs(total - 33.48e6) <= 0.01e6, total
    assert tuple(model.projection.weight.shape) == (1280, 768)
    assert model.projection.bias is None


def test_ulip2_pointbert_config_is_the_released_one():
    cfg = get_config("ulip2-pointbert")
    assert (cfg.trans_dim, cfg.depth, cfg.num_heads, cfg.num_group, cfg.group_size) == (384, 18, 6, 512, 32)
    assert (cfg.encoder_dims, cfg.in_channels, cfg.num_points, cfg.embed_dim) == (256, 6, 10000, 1280)
    assert cfg.feat_dim == 768


def test_configs_are_listed():
    names = list_configs()
    for name in ("ulip2-pointbert", "pointbert-small", "pointbert-tiny"):
        assert name in names
    assert names == sorted(names)


def test_unknown_config_names_the_shipped_ones():
    with pytest.raises(Ulip2Error) as err:
        get_config("pointbert-huge")
    message = str(err.value)
    assert "pointbert-huge" in message
    for name in ("ulip2-pointbert", "pointbert-small", "pointbert-tiny"):
        assert name in message
    with pytest.raises(Ulip2Error):
        create_encoder("pointbert-huge")


def test_config_with_unknown_fields_is_refused():
    data = get_config("pointbert-tiny").to_dict() | {"mlp_ratio": 4}
    with pytest.raises(Ulip2Error, match="mlp_ratio"):
        EncoderConfig.from_dict(data)
    assert EncoderConfig.from_dict(get_config("pointbert-tiny").to_dict()) == get_config("pointbert-tiny")


@pytest.fixture(scope="module")
def tiny():
    return create_encoder("pointbert-tiny", seed=0).eval()


@pytest.fixture
def clouds(rng):
    points = rng.normal(size=(3, 512, 6)).astype(np.float32)
    points[..., 3:] = rng.uniform(0, 1, size=(3, 512, 3))
    return torch.from_numpy(points)


def test_output_shape_dtype_and_unit_norm(tiny, clouds):
    with torch.no_grad():
        out = tiny(clouds)
    assert out.shape == (3, 384)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    # different clouds, different embeddings
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_embed_dim_retargets_the_projection():
    model = create_encoder("pointbert-tiny", embed_dim=1280, seed=0).eval()
    assert model.config.embed_dim == 1280
    with torch.no_grad():
        assert model(torch.rand(1, 512, 6)).shape == (1, 1280)


def test_same_seed_same_weights():
    a = create_encoder("pointbert-tiny", seed=3).state_dict()
    b = create_encoder("pointbert-tiny", seed=3).state_dict()
    c = create_encoder("pointbert-tiny", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_scale_reaches_the_model(tiny, clouds):
    """The model does not rescale its input to the unit sphere: training's scale
    augmentation must change what it sees (ULIP leaves normalisation to the data)."""
    scaled = clouds.clone()
    scaled[..., :3] = clouds[..., :3] * 1.25
    with torch.no_grad():
        assert (tiny(scaled) - tiny(clouds)).abs().max() > 1e-3


def test_colour_matters_and_extra_channels_are_ignored(tiny, clouds):
    with torch.no_grad():
        base = tiny(clouds)
        recoloured = clouds.clone()
        recoloured[..., 3:] = 1.0 - recoloured[..., 3:]
        assert (tiny(recoloured) - base).abs().max() > 1e-5  # random weights: small but not zero
        # (N, 9) input as core's sampler gives it (xyz, rgb, normal): the normals are dropped
        with_normals = torch.cat([clouds, torch.randn(3, 512, 3)], dim=-1)
        torch.testing.assert_close(tiny(with_normals), base, atol=0, rtol=0)


def test_batch_elements_are_independent_in_eval(tiny, clouds):
    with torch.no_grad():
        together = tiny(clouds)
        for b in range(3):
            torch.testing.assert_close(tiny(clouds[b:b + 1])[0], together[b], atol=1e-5, rtol=0)


def test_other_point_counts_work(tiny, rng):
    with torch.no_grad():
        out = tiny(torch.from_numpy(rng.normal(size=(2, 1000, 6)).astype(np.float32)))
    assert out.shape == (2, 384)


def test_features_are_cls_and_maxpool(tiny, clouds):
    with torch.no_grad():
        feats = tiny.features(clouds)
        assert feats.shape == (3, 2 * tiny.config.trans_dim)
        projected = torch.nn.functional.normalize(feats @ tiny.projection.weight.T, dim=-1)
        torch.testing.assert_close(projected, tiny(clouds), atol=1e-6, rtol=0)


def test_group_encoder_widths_come_from_the_config():
    """pointbert-lite narrows the group encoder; the widths survive a to_dict/from_dict
    round trip (bundle.json stores them as a list)."""
    import json

    lite = get_config("pointbert-lite")
    assert lite.group_dims == (64, 128, 256)
    model = create_encoder(lite)
    assert model.encoder.first_conv[0].out_channels == 64
    assert model.encoder.second_conv[0].in_channels == 256
    again = EncoderConfig.from_dict(json.loads(json.dumps(lite.to_dict())))
    assert again == lite
    assert get_config("pointbert-mini").group_dims == (128, 256, 512)
