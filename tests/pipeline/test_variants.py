"""Student variants (`swin_flax.pipeline.variants`): INIT or INIT+kd, parsed in order."""

import pytest

from swin_flax.errors import UserInputError
from swin_flax.pipeline.variants import StudentVariant, parse_variant, parse_variants


@pytest.mark.parametrize(
    "text, init, distill, name",
    [
        ("random", "random", False, "random"),
        ("random+kd", "random", True, "random_kd"),
        (" transfer ", "transfer", False, "transfer"),
        ("transfer+kd", "transfer", True, "transfer_kd"),
    ],
)
def test_a_variant_is_an_init_and_whether_it_distils(text, init, distill, name):
    variant = parse_variant(text)
    assert variant == StudentVariant(init=init, distill=distill)
    assert variant.name == name and variant.transfer == (init == "transfer")


@pytest.mark.parametrize("text", ["pretrained", "transfer+KD", "random+kd+kd", ""])
def test_an_unknown_variant_lists_the_four_known_ones(text):
    with pytest.raises(UserInputError, match="expected one of random, random\\+kd, transfer"):
        parse_variant(text)


def test_variants_keep_their_order_skip_blanks_and_must_not_repeat():
    assert [v.name for v in parse_variants("transfer+kd, random,")] == ["transfer_kd", "random"]
    assert parse_variants("") == []  # the teacher alone
    with pytest.raises(UserInputError, match="student variants repeat"):
        parse_variants("random,transfer,random")


def test_the_strong_scratch_baseline_is_random_init_labels_only_and_long():
    variant = parse_variant("random+long")
    assert variant == StudentVariant(init="random", distill=False, long=True)
    assert variant.name == "random_long" and variant.spelling == "random+long"
    assert not variant.transfer
    with pytest.raises(UserInputError, match="random\\+long"):
        parse_variant("transfer+long")
