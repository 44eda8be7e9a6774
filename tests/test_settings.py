"""swin_flax/settings.py: every option declared once with its help, the listing generated
from the declarations, and the `attention` option reaching every model the pipeline builds."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import pytest

from configs import demo
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import UserInputError
from swin_flax.model import attention
from swin_flax.pipeline import plan
from swin_flax.pipeline.run import Execution, run_pipeline
from swin_flax.settings import (
    ATTENTION_IMPLEMENTATIONS,
    SECTIONS,
    DataSettings,
    RunSettings,
    StudentSettings,
    TeacherSettings,
    describe_options,
    option_fields,
    resumable_keys,
)

REPO = Path(__file__).resolve().parents[1]


def test_every_option_has_a_one_line_help():
    fields = list(option_fields())
    # the run's own options and every section's: none left out, none without help
    expected = sum(len(dataclasses.fields(kind)) for kind in SECTIONS.values()) + (
        len(dataclasses.fields(RunSettings)) - len(SECTIONS)
    )
    assert len(fields) == expected
    missing = [key for key, f, _ in fields if not f.metadata["help"].strip()]
    assert missing == []
    multiline = [key for key, f, _ in fields if "\n" in f.metadata["help"]]
    assert multiline == []


def test_the_listing_names_every_key_with_its_default_range_and_resume_rule():
    listing = describe_options()
    for key, f, default in option_fields():
        expected = f.metadata["expected"] or f"any {type(default).__name__}"
        resume = "may change on resume" if f.metadata["resumable"] else "fixed on resume"
        assert f"  {key} = {default!r}  ({expected}; {resume})\n      {f.metadata['help']}" in (
            listing + "\n"
        ), key
    assert "  distill.w_d = 13.0  (a finite weight >= 0; fixed on resume)" in listing
    assert (
        "  distill.peak_lr = 0.0002  (a finite learning rate > 0; may change on resume)" in listing
    )
    assert "\ndistill: Training the students" in listing  # a section header, its docstring


def test_resumable_keys_include_the_run_options_that_change_how_not_what():
    keys = resumable_keys()
    assert {"attention", "distill.peak_lr", "data.data_dir", "loop.log_every_steps"} <= keys
    assert not {"seed", "compute_dtype", "distill.w_d", "distill.epochs"} & keys


def run_script(*args):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.parametrize("command", [["train.py", "--options"]])
def test_the_options_listing_is_printed_without_a_config(command):
    result = run_script(*command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == describe_options().strip()


# ---------------------------------------------------------------------------- attention option


def test_the_attention_choices_are_declared_once():
    assert attention.ATTENTION_IMPLEMENTATIONS is ATTENTION_IMPLEMENTATIONS
    assert "one of 'einsum', 'xla', 'cudnn', 'pallas'" in describe_options()


def test_every_student_build_computes_attention_as_configured(tmp_path, monkeypatch):
    """Every model the loop trains (teacher and students, of every kind) computes attention
    as the run says: a run option, not part of any stage's spec."""
    from swin_flax.pipeline import run

    settings = RunSettings(
        attention="xla",
        runs="random,transfer",
        data=DataSettings(image_size=32),
        teacher=TeacherSettings(model="swin_pico", init="random"),
        student=StudentSettings(model="swin_pico_n"),
    )
    run_plan = plan.build_plan(settings, tmp_path, SplitSizes(256, 16, 4))
    trained = []

    def train_stage(*, model, **_):
        trained.append(model.attention)
        raise StopIteration  # no training: only the model the loop built matters

    monkeypatch.setattr(run, "train_stage", train_stage)
    monkeypatch.setattr(run.Execution, "initial_params", lambda *args: None)
    splits = types.SimpleNamespace(train=None, test=None)  # never read
    execution = Execution(run_plan, tmp_path, splits)
    for spec in run_plan.stages:
        with pytest.raises(StopIteration):
            execution.execute(spec)
    assert trained == ["xla"] * 3
    cut = dataclasses.replace(settings, runs="transfer", student=StudentSettings(cut_points=(6, 8)))
    spec = plan.build_plan(cut, tmp_path, SplitSizes(256, 16, 4)).stage("student_transfer")
    assert (spec.blocks.cut_points, spec.model.depths) == ((6, 8), (2, 2, 2, 2))


def tiny_demo_config(attention_name: str):
    """The offline demo at 4 steps a stage: a teacher, then one distilled student."""
    config = demo.get_config("smoke")
    config.attention = attention_name
    config.runs = "random+kd"
    config.data.train_subset, config.data.test_subset = 64, 32
    for stage in (config.finetune, config.distill):
        stage.batch_size, stage.epochs, stage.warmup_epochs = 16, 1.0, 0.25
    config.eval.throughput_batch_size = 0
    config.loop.log_every_steps = 1
    return config


def losses_of(stage_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").open()]


@pytest.mark.slow
def test_a_run_with_xla_attention_trains_like_einsum(tmp_path):
    runs = {name: tmp_path / name for name in ("einsum", "xla")}
    rows = {name: run_pipeline(tiny_demo_config(name), workdir) for name, workdir in runs.items()}
    for stage in ("teacher", "student_random_kd"):  # the teacher's forward pass in both
        einsum, xla = (losses_of(runs[name] / stage) for name in runs)
        assert len(einsum) == 4 and einsum == pytest.approx(xla, rel=1e-4, abs=1e-5), stage
    assert [r["top1"] for r in rows["xla"]] == pytest.approx([r["top1"] for r in rows["einsum"]])

    # A finished teacher loaded again computes attention as the run says, not as stored.
    settings = RunSettings.from_config(tiny_demo_config("einsum"))
    run_plan = plan.build_plan(settings, runs["xla"])
    loaded, _ = Execution(run_plan, runs["xla"], None).execute(run_plan.stage("teacher"))
    assert loaded.attention == "einsum"


@pytest.mark.parametrize(
    "name, message",
    [
        ("flash", "attention must be one of 'einsum', 'xla', 'cudnn', 'pallas', got 'flash'"),
        pytest.param(
            "cudnn",
            "attention='cudnn' needs an NVIDIA GPU, this run is on cpu",
            marks=pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU-only check"),
        ),
    ],
)
def test_an_attention_this_run_cannot_use_is_refused_before_anything_trains(
    tmp_path, name, message
):
    with pytest.raises(UserInputError, match=re.escape(message)):
        run_pipeline(tiny_demo_config(name), tmp_path)
    assert not (tmp_path / "teacher").exists()


@pytest.mark.parametrize("seeds", ["0,0", "1, 2, 1"])
def test_a_seed_given_twice_is_refused(seeds):
    from swin_flax.settings import RunSettings

    with pytest.raises(UserInputError) as caught:
        RunSettings.from_config({"seeds": seeds})
    assert f"seeds must be comma-separated distinct ints >= 0, e.g. '0,1,2', got {seeds!r}" in str(
        caught.value
    )
    assert RunSettings.from_config({"seeds": "0,1,2"}).seeds == "0,1,2"


def test_the_resized_crops_ranges_are_checked_with_the_other_options():
    from swin_flax.settings import RunSettings

    with pytest.raises(UserInputError) as caught:
        RunSettings.from_config({"data": {"crop_scale": [1.0, 0.08], "random_resized_crop": "yes"}})
    assert (
        "data.crop_scale must be a pair (low, high) with 0 < low <= high <= 1, got (1.0, 0.08)"
        in str(caught.value)
    )
    assert "data.random_resized_crop must be one of 'auto', 'on', 'off', got 'yes'" in str(
        caught.value
    )
    data = RunSettings.from_config({"data": {"crop_scale": [0.35, 1.0]}}).data
    assert data.crop_scale == (0.35, 1.0) and data.random_resized_crop == "auto"
