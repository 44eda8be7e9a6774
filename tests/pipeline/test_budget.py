"""student.budget (swin_flax/pipeline/budget.py): exact parameter counts, the largest student
within a parameter or latency budget, and one clear error for a budget no student meets."""

import jax.numpy as jnp
import pytest

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.swin import SwinTransformer, abstract_params, count_params
from swin_flax.pipeline import budget

SWIN_T = presets.preset_config("swin_t").replace(num_classes=10)
PICO = presets.preset_config("swin_pico").replace(num_classes=4)


@pytest.fixture(autouse=True)
def fresh_measurements():
    budget._pick.cache_clear()  # the pick is cached per run; each test measures anew
    yield
    budget._pick.cache_clear()


def pick(b: budget.Budget, teacher=SWIN_T, **kw):
    return budget.pick_depths(b, teacher, batch_size=8, repeats=2, dtype=jnp.float32, **kw)


@pytest.mark.parametrize(
    "text, kind, limit",
    [
        ("params:5.2M", "params", 5.2e6),
        ("params:800k", "params", 8e5),
        ("params:5200000", "params", 5.2e6),
        ("params:5e6", "params", 5e6),
        ("latency:2.5ms", "latency", 2.5),
        ("latency:3", "latency", 3.0),
    ],
)
def test_budgets_are_read(text, kind, limit):
    assert budget.parse_budget(text) == budget.Budget(kind, limit)


def test_an_unreadable_budget_says_what_is_expected():
    with pytest.raises(UserInputError, match="expected 'params:N'"):
        budget.parse_budget("5M")


@pytest.mark.parametrize("depths", [(1, 1, 1, 1), (2, 1, 3, 2), (2, 2, 4, 2)])
def test_parameter_counts_are_exact(depths):
    rest, per_block = budget.params_per_block(PICO)
    model = SwinTransformer.from_config(PICO.replace(depths=depths))
    assert budget.student_params(depths, rest, per_block) == count_params(abstract_params(model))


def test_a_parameter_budget_picks_the_largest_student_that_fits():
    rest, per_block = budget.params_per_block(SWIN_T)
    swin_m = budget.student_params((2, 2, 4, 2), rest, per_block)
    assert pick(budget.Budget("params", swin_m)) == (2, 2, 4, 2)
    depths = pick(budget.Budget("params", swin_m - 1))
    size = budget.student_params(depths, rest, per_block)
    assert size < swin_m
    larger = [
        d
        for d in budget.candidate_depths(SWIN_T.depths)
        if size < budget.student_params(d, rest, per_block) <= swin_m - 1
    ]
    assert larger == []  # nothing bigger fits


def test_a_budget_no_student_meets_is_one_clear_error():
    with pytest.raises(UserInputError) as info:
        pick(budget.Budget("params", 1e6))
    assert str(info.value).startswith(
        "student.budget params:1,000,000 cannot be met: the smallest student that can be cut "
        "from the teacher (depths (2, 2, 6, 2)), one block per stage, has 10.99M parameters"
    )


def fake_latency(per_stage, measured):
    """An additive latency (ms) per block of each stage, recording what was measured."""

    def latency_ms(config, batch_size, repeats, dtype):
        measured.append(config.depths)
        return 1.0 + sum(d * c for d, c in zip(config.depths, per_stage))

    return latency_ms


def test_a_latency_budget_measures_few_students_and_takes_the_largest_that_fits(monkeypatch):
    measured = []
    monkeypatch.setattr(budget, "latency_ms", fake_latency((1.0, 1.0, 1.0, 1.0), measured))
    depths = pick(budget.Budget("latency", 1.0 + 9))  # 9 blocks in all
    assert depths == (1, 1, 5, 2)  # 9 blocks, the most parameters (late stages are wider)
    assert len(measured) == 1 + 4 + 1  # the smallest, one more per stage, the pick
    with pytest.raises(UserInputError, match="one block per stage, has 5.000 ms per image"):
        budget._pick.cache_clear()
        pick(budget.Budget("latency", 4.0))


def test_a_latency_prediction_that_misses_is_measured_again(monkeypatch):
    measured = []
    additive = fake_latency((1.0, 1.0, 1.0, 1.0), measured)

    def slower_when_deep(config, *args):  # blocks cost more together than alone
        return additive(config, *args) + (5.0 if sum(config.depths) > 8 else 0.0)

    monkeypatch.setattr(budget, "latency_ms", slower_when_deep)
    depths = pick(budget.Budget("latency", 1.0 + 9))
    assert sum(depths) == 8  # the first measured pick (9 blocks) did not fit


@pytest.mark.slow  # compiles and times a model (about 10 s on 2 busy cores)
def test_latency_is_measured_in_milliseconds_per_image():
    ms = budget.latency_ms(PICO.replace(depths=(1, 1, 1, 1)), 4, 2, jnp.float32)
    assert 0.0 < ms < 10_000.0
    assert budget.measurement_dtype("auto") == jnp.float32  # the CPU
    assert budget.measurement_dtype("bfloat16") == jnp.bfloat16
