"""State-dict layouts (`swin_flax.weights.layouts`): Microsoft's and wrapped checkpoints
renamed to timm's, and the architecture read back from the weights alone."""

import numpy as np
import pytest

from swin_flax.errors import ConversionError
from swin_flax.weights import layouts
from tests.weights import parity_report as parity


# Building the timm models of the ImageNet-sized configurations takes 2-3 s each.
@pytest.mark.torch
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow)
        if name in ("swin_t_224", "swin_m_224", "w12_384")
        else name
        for name in parity.CONFIGS
    ],
)
def test_architecture_inferred_from_weights(name, timm_models):
    arch = layouts.infer_architecture(parity.timm_state_dict(timm_models(name)))
    expected = dict(patch_size=4, in_chans=3, mlp_ratio=4.0, qkv_bias=True)
    expected.update(parity.CONFIGS[name])
    assert arch == expected


def test_microsoft_layout_is_renamed_and_buffers_dropped():
    ms = {
        "layers.0.downsample.reduction.weight": np.zeros((192, 384)),
        "layers.2.downsample.norm.weight": np.ones(1536),
        "layers.1.blocks.1.attn_mask": np.zeros((4, 49, 49)),
        "layers.0.blocks.0.attn.relative_position_index": np.zeros((49, 49)),
        "head.weight": np.zeros((10, 768)),
        "head.bias": np.zeros(10),
    }
    out = layouts.to_timm_layout({f"module.{k}": v for k, v in ms.items()})
    assert sorted(out) == [
        "head.fc.bias",
        "head.fc.weight",
        "layers.1.downsample.reduction.weight",
        "layers.3.downsample.norm.weight",
    ]
    assert layouts.to_timm_layout(out).keys() == out.keys()  # idempotent on timm layout


def test_the_default_image_size_puts_one_window_in_the_last_stage():
    assert layouts.default_img_size(7) == 224 and layouts.default_img_size(12) == 384
    assert layouts.default_img_size(4, patch_size=2) == 64
    assert layouts.default_img_size(7, num_stages=2) == 56


def swin_v2_state_dict(prefix: str = "", attention: str = "attn") -> dict:
    """The keys that tell a Swin-V2: a log-spaced continuous position bias MLP (cpb_mlp)
    and a learned attention temperature (logit_scale), no relative_position_bias_table."""
    block = f"{prefix}layers.0.blocks.0.{attention}"
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return {
        f"{prefix}patch_embed.proj.weight": zeros(8, 3, 4, 4),
        f"{block}.logit_scale": zeros(2, 1, 1),
        f"{block}.cpb_mlp.0.weight": zeros(512, 2),
        f"{block}.cpb_mlp.2.weight": zeros(2, 512),
        f"{block}.q_bias": zeros(8),
        f"{block}.qkv.weight": zeros(24, 8),
        "head.fc.weight": zeros(10, 8),
    }


@pytest.mark.parametrize(
    "state",
    [
        swin_v2_state_dict(),  # timm's swinv2_*
        swin_v2_state_dict(prefix="module."),  # saved from DistributedDataParallel
        {  # transformers' Swinv2ForImageClassification
            "swinv2.embeddings.patch_embeddings.projection.weight": np.zeros((8, 3, 4, 4)),
            "swinv2.encoder.layers.0.blocks.0.attention.self.logit_scale": np.zeros((2, 1, 1)),
            "swinv2.encoder.layers.0.blocks.0.attention.self.continuous_position_bias_mlp.0.weight": (
                np.zeros((512, 2))
            ),
        },
    ],
)
def test_swin_v2_weights_are_named_as_unsupported_not_as_damaged(state):
    for read in (layouts.infer_architecture, layouts.to_timm_layout):
        with pytest.raises(ConversionError) as caught:
            read(state)
        message = str(caught.value)
        assert message.startswith("Swin-V2 checkpoints are not supported")
        assert "logit_scale" in message and "Swin (v1)" in message


def test_a_top_level_logit_scale_is_no_swin_v2():
    layouts.check_not_swin_v2(["logit_scale", "visual.patch_embed.proj.weight"])  # CLIP's
    with pytest.raises(ConversionError, match="have cpb_mlp parameters"):
        layouts.check_not_swin_v2(["layers.0.blocks.0.attn.cpb_mlp.0.weight"])


def test_vit_weights_given_as_a_swin_are_named_a_vit():
    """timm's ViT has a 4-D patch_embed.proj.weight too: it failed with "stages found []"."""
    vit = {
        "cls_token": np.zeros((1, 1, 8)),
        "pos_embed": np.zeros((1, 17, 8)),
        "patch_embed.proj.weight": np.zeros((8, 3, 4, 4)),
        "blocks.0.attn.qkv.weight": np.zeros((24, 8)),
        "head.weight": np.zeros((10, 8)),
    }
    with pytest.raises(ConversionError) as caught:
        layouts.infer_architecture(vit)
    assert str(caught.value) == (
        "not a Swin Transformer state_dict: it looks like a ViT (one column of blocks.N with "
        "cls_token, pos_embed), not a Swin (stages of layers.N.blocks.M); swin_flax reads "
        "Swin (v1) weights"
    )
    del vit["cls_token"], vit["pos_embed"]  # no telling what it is: the keys are named
    with pytest.raises(ConversionError, match=r"no Swin stage .*first keys: blocks.0.attn"):
        layouts.infer_architecture(vit)
