"""Named models (`swin_flax.model.presets`): the paper's parameter counts, timm's names as
aliases, and clear errors for unknown names and options."""

import pytest

import swin_flax
from swin_flax.model import presets

PAPER_PARAMS_100 = {
    "swin_n": (20.5, 20_490_286),
    "swin_m": (24.0, 24_043_270),
    "swin_t": (27.6, 27_596_254),
    "swin_s": (48.9, 48_914_158),
    "swin_b": (86.9, 86_845_724),
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_100))
def test_parameter_counts_match_paper_table_x(name):
    model = swin_flax.create_model(name, num_classes=100)
    count = swin_flax.count_params(swin_flax.abstract_params(model))
    paper_millions, exact = PAPER_PARAMS_100[name]
    assert count == exact
    # The paper rounds to 0.1M (Swin-B's 86.846M appears as 86.9M: 86.85 rounded half up).
    assert abs(count / 1e6 - paper_millions) <= 0.055


def test_timm_names_are_aliases():
    model = swin_flax.create_model("swin_base_patch4_window12_384.ms_in1k")
    assert (model.img_size, model.window_size, model.embed_dim) == (384, 12, 128)


def test_unknown_name_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model name 'swin_x'"):
        swin_flax.create_model("swin_x")
    with pytest.raises(TypeError, match="unknown model options \\['depth'\\]"):
        swin_flax.create_model("swin_t", depth=(2, 2, 2, 2))


def test_every_listed_name_builds_and_pretrained_tags_are_ignored():
    for name in presets.model_names():
        assert presets.preset_config(name) == presets.create_model(name).config, name
    assert presets.preset("swin_tiny_patch4_window7_224.ms_in22k") == presets.preset("swin_t")
    overridden = presets.create_model("swin_t", num_classes=10, img_size=448)
    assert (overridden.num_classes, overridden.img_size, overridden.depths) == (
        10,
        448,
        (2, 2, 6, 2),
    )


def test_a_preset_at_an_input_size_it_cannot_take_names_the_option_the_user_set():
    from swin_flax.errors import UserInputError
    from swin_flax.model import presets

    presets.check_image_size("swin_t", 224, model_option="teacher.model", size_option="x")
    with pytest.raises(UserInputError) as info:
        presets.check_image_size(
            "swin_t", 200, model_option="teacher.model", size_option="data.image_size"
        )
    assert str(info.value) == (
        "teacher.model swin_t cannot take data.image_size=200: data.image_size 200 must be "
        "divisible by patch_size * 2**(stages-1) = 32; the nearest valid sizes are 192 and 224"
    )
    assert "img_size" not in str(info.value)
