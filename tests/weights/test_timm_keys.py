"""The timm <-> Flax key table (`swin_flax.weights.timm_keys`): every row maps both ways,
arrays change layout exactly, and flax_to_timm inverts timm_to_flax."""

import numpy as np
import pytest

import swin_flax
from swin_flax.errors import ConversionError
from swin_flax.weights import layouts, timm_keys
from swin_flax.weights import timm as C
from tests.helpers import pico_state, tiny_model


def test_key_table_maps_both_ways():
    for timm_template, flax_template, layout in timm_keys.KEY_TABLE:
        key, path = timm_template.format(i=3, j=11), flax_template.format(i=3, j=11)
        assert timm_keys.timm_key_to_flax_path(key) == (path, layout)
        assert timm_keys.flax_path_to_timm_key(path) == (key, layout)
    assert timm_keys.timm_key_to_flax_path("layers.0.blocks.0.attn.relative_position_index") is None
    assert timm_keys.timm_key_to_flax_path("head.fc.weight.extra") is None


@pytest.mark.torch
def test_flax_to_timm_inverts_timm_to_flax_exactly(timm_models):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**layouts.infer_architecture(state)))
    # A torch state_dict is accepted as it is.
    back = timm_keys.flax_to_timm(C.timm_to_flax(timm_models("pico_32").state_dict(), model))
    expected = {k: v for k, v in state.items() if "relative_position_index" not in k}
    assert back.keys() == expected.keys()
    for key, value in expected.items():
        assert back[key].dtype == np.float32 and back[key].flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_linear_and_conv_arrays_change_layout_and_back():
    linear = np.arange(6.0).reshape(2, 3)  # timm (out, in) -> Flax (in, out)
    assert timm_keys.array_to_flax(linear, "linear").shape == (3, 2)
    conv = np.zeros((8, 3, 4, 4))  # OIHW -> HWIO
    assert timm_keys.array_to_flax(conv, "conv").shape == (4, 4, 3, 8)
    assert timm_keys.timm_shape((4, 4, 3, 8), "conv") == (8, 3, 4, 4)
    assert timm_keys.timm_shape((3, 2), "linear") == (2, 3)
    assert timm_keys.array_to_flax(linear, None) is linear


def test_a_parameter_with_no_timm_name_is_an_error():
    with pytest.raises(ConversionError, match="no timm equivalent.*extra/kernel"):
        timm_keys.flax_to_timm({"extra": {"kernel": np.zeros((2, 2))}})
    state = timm_keys.flax_to_timm({"params": swin_flax.init_params(tiny_model(), 0)})
    assert state["head.fc.weight"].shape == (3, 8)  # a {"params": ...} wrapper is accepted
