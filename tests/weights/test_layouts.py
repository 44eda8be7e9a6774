"""State-dict layouts (`swin_flax.weights.layouts`): Microsoft's and wrapped checkpoints
renamed to timm's, and the architecture read back from the weights alone."""

import numpy as np
import pytest

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
