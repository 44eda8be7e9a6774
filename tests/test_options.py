"""swin_flax/_options.py: declared fields -> range checks, unknown keys, the listing."""

import dataclasses

import pytest

from swin_flax import _options
from swin_flax._options import finite, one_of, option


@dataclasses.dataclass(frozen=True)
class Part:
    """A section."""

    rate: float = option(0.5, finite(lambda v: 0 <= v < 1), "a rate in [0, 1)", help="a rate")
    kind: str = option("a", *one_of("a", "b"), resumable=True, help="a kind")


@dataclasses.dataclass(frozen=True)
class Root:
    """The root."""

    seed: int = option(0, lambda v: v >= 0, "an int >= 0", help="a seed")
    part: Part = Part()


SECTIONS = {"part": Part}


def test_out_of_range_values_are_named_with_what_was_expected():
    bad = Root(seed=-1, part=Part(rate=float("nan"), kind="c"))
    assert _options.range_problems(bad, SECTIONS) == [
        "seed must be an int >= 0, got -1",
        "part.rate must be a rate in [0, 1), got nan",
        "part.kind must be one of 'a', 'b', got 'c'",
    ]
    assert _options.range_problems(Root(), SECTIONS) == []


def test_unknown_keys_get_a_close_match():
    values = {"sed": 1, "part": {"rat": 0.1, "kind": "a"}, "zzz": 0}
    assert _options.unknown_keys(values, Root, SECTIONS) == [
        "sed (did you mean seed?)",
        "part.rat (did you mean part.rate?)",
        "zzz",
    ]


def test_the_listing_names_every_key_with_default_range_resume_rule_and_help():
    text = _options.describe(Root(), SECTIONS, "Options:")
    assert "  part.kind = 'a'  (one of 'a', 'b'; may change on resume)\n      a kind" in text
    assert "  seed = 0  (an int >= 0; fixed on resume)\n      a seed" in text
    assert "part: A section." in text and "run: The root." in text


def test_lists_become_tuples_and_sections_are_left_to_their_own_class():
    assert _options.normalised(Root, {"seed": 1, "part": {}, "x": 2}, SECTIONS) == {"seed": 1}
    assert _options.normalised(Part, {"rate": [1, 2]}, SECTIONS) == {"rate": (1, 2)}


def test_an_ordered_pair_is_two_positive_finite_numbers_low_first():
    check, expected = _options.ordered_pair(1.0)
    assert expected == "a pair (low, high) with 0 < low <= high <= 1"
    assert check((0.08, 1.0)) and check((0.5, 0.5))
    for bad in ((1.0, 0.08), (0.0, 1.0), (0.5, 1.5), (0.5,), [0.1, 0.2], (True, 1.0)):
        assert not check(bad), bad
    unbounded, _ = _options.ordered_pair()
    assert unbounded((0.75, 4 / 3)) and not unbounded((0.75, float("inf")))


@pytest.mark.parametrize(
    "section, problem",
    [
        ({"seed": 16.5}, "seed: an int was expected, got 16.5"),
        ({"seed": "16"}, "seed: an int was expected, got '16'"),
        ({"seed": True}, "seed: an int was expected, got True"),
        ({"part": {"rate": "0.5"}}, "part.rate: a number was expected, got '0.5'"),
        ({"part": {"kind": 3}}, "part.kind: a string was expected, got 3"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_the_type_expected(section, problem):
    """Python's own words ("'>=' not supported between 'str' and 'int'", int()'s message)
    reached the user: every typed option says what it expected instead, range aside."""
    values = {k: v for k, v in section.items() if k != "part"}
    part = Part(**_options.normalised(Part, section.get("part", {}), SECTIONS))
    root = Root(**_options.normalised(Root, values, SECTIONS), part=part)
    assert _options.range_problems(root, SECTIONS) == [problem]


def test_a_whole_float_is_an_int_where_an_int_is_declared():
    assert _options.normalised(Root, {"seed": 128.0}, SECTIONS) == {"seed": 128}
    assert type(_options.normalised(Root, {"seed": 128.0}, SECTIONS)["seed"]) is int
