"""The run as a plan (`swin_flax.pipeline.plan`): the config resolved once into typed stages,
each stage's length said before training and absurd ones refused, equal stages of two
sweep rows trained once, and every stage recording what the code before the plan recorded
(so that old work directories resume and reuse their stages)."""

import dataclasses
import json

import pytest

from configs import demo, paper_tables
from configs import pretrained as pretrained_config
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import UserInputError
from swin_flax.pipeline import plan
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.sweeps import parse_variants, sweep_rows
from swin_flax.settings import RunSettings, student_seeds
from swin_flax.training.optim import steps_from_epochs
from tests.helpers import smoke_config

DIGITS = SplitSizes(train=1347, test=450, num_classes=10)


def settings_with(**changes) -> RunSettings:
    """The smoke settings with run options (runs='x') and section values (finetune={...})."""
    settings = RunSettings.from_config(smoke_config())
    return dataclasses.replace(
        settings,
        **{
            name: dataclasses.replace(getattr(settings, name), **value)
            if isinstance(value, dict)
            else value
            for name, value in changes.items()
        },
    )


def built(settings, data=DIGITS, tmp="/w", source=None) -> plan.RunPlan:
    return plan.build_plan(settings, tmp, data, source)


# --- stage lengths ------------------------------------------------------------------------


def test_absurd_epochs_are_refused_before_any_data_loads(tmp_path):
    config = smoke_config()  # tfds cifar100, not prepared: loading would fail differently
    config.finetune.epochs = 1e9
    with pytest.raises(UserInputError) as caught:
        run_pipeline(config, tmp_path)
    assert (
        "finetune.epochs 1e+09 gives at least 1,000,000,000 steps, more than "
        "loop.max_stage_steps 100,000,000; lower the epochs, or set loop.max_stage_steps "
        "higher (0: no limit) if you mean it"
    ) in str(caught.value)
    assert not (tmp_path / "teacher").exists()


def test_the_bound_is_lifted_by_an_explicit_option():
    config = smoke_config()
    config.finetune.epochs = 1e9
    config.loop.max_stage_steps = 0
    run_plan = built(plan.load_settings(config), SplitSizes(None, None, 100))
    assert run_plan.stage("teacher").optim.epochs == 1e9


def test_every_stage_length_is_said_before_training():
    settings = settings_with(
        runs="random,transfer+kd",
        finetune={"epochs": 3.0, "batch_size": 8},
        distill={"epochs": 2.5, "batch_size": 16},
    )
    run_plan = built(settings, SplitSizes(100, 20, 100))
    assert [f"stage length: {length.describe()}" for length in run_plan.lengths] == [
        "stage length: fine-tune teacher: 36 steps (3 epochs of 12)",
        "stage length: each student: 15 steps (2.5 epochs of 6)",
    ]
    assert [spec.steps for spec in run_plan.stages] == [36, 15, 15]


def test_a_stage_too_long_for_the_data_at_hand_is_refused_with_its_count():
    settings = settings_with(
        runs="transfer", finetune={"epochs": 30.0, "batch_size": 8}, loop={"max_stage_steps": 100}
    )
    with pytest.raises(UserInputError) as caught:
        built(settings, SplitSizes(32, 8, 100))
    assert (
        "finetune.epochs 30 makes fine-tune teacher: 120 steps (30 epochs of 4), more than "
        "loop.max_stage_steps 100; lower the epochs"
    ) in str(caught.value)


def test_a_given_teacher_and_no_students_train_nothing(tmp_path):
    import swin_flax

    model = swin_flax.create_model("swin_pico", num_classes=100)
    swin_flax.save_checkpoint(tmp_path / "t", model, swin_flax.init_params(model, 0))
    settings = settings_with(runs="", teacher={"finetuned": str(tmp_path / "t")})
    given = built(settings, SplitSizes(64, 8, 100))
    assert [length.label for length in given.lengths] == []
    assert [(s.name, s.given, s.steps) for s in given.stages] == [
        ("teacher", str(tmp_path / "t"), 0)
    ]
    students = built(dataclasses.replace(settings, runs="random"), SplitSizes(64, 8, 100))
    assert [length.label for length in students.lengths] == ["each student"]


def test_unknown_sizes_plan_every_stage_without_steps():
    run_plan = built(settings_with(runs="transfer+kd"), SplitSizes(None, None, 100, unknown="x"))
    assert [(s.name, s.steps) for s in run_plan.stages] == [
        ("teacher", None),
        ("student_transfer_kd", None),
    ]
    assert run_plan.lengths == ()


# --- the stages ---------------------------------------------------------------------------


def test_every_sweep_row_is_checked_like_the_base_settings():
    with pytest.raises(
        UserInputError, match=r"alpha2.*alpha must be a weight in \[0, 1\], got 2.0"
    ):
        built(settings_with(sweep="alpha=0,2"))


def test_a_stage_two_sweep_rows_resolve_to_alike_is_one_stage_with_a_row_under_each():
    """The undistilled `transfer` student of a sweep over distillation options is the
    same stage in every row: it trains once, and each row's table cell shows it."""
    settings = settings_with(
        runs="transfer,transfer+kd", sweep="distillation=mse; distillation=kl,temperature=4"
    )
    run_plan = built(settings)
    assert [s.name for s in run_plan.stages] == [
        "teacher",
        "student_transfer_distillationmse",
        "student_transfer_kd_distillationmse",
        "student_transfer_kd_distillationkl_temperature4",
    ]
    students = [r for r in run_plan.rows if r.role == "student"]
    assert [(r.stage, r.sweep_row, r.init, r.distillation) for r in students] == [
        ("student_transfer_distillationmse", "distillation=mse", "transfer", False),
        ("student_transfer_kd_distillationmse", "distillation=mse", "transfer", True),
        ("student_transfer_distillationmse", "distillation=kl, temperature=4", "transfer", False),
        (
            "student_transfer_kd_distillationkl_temperature4",
            "distillation=kl, temperature=4",
            "transfer",
            True,
        ),
    ]
    assert students[2].model == "swin_pico_n [distillation=kl, temperature=4]"
    # A distilled student differs with the distillation: one stage per row.
    kd = [s for s in run_plan.stages if s.distills]
    assert kd[0].loss.distillation == "mse" and kd[1].loss.temperature == 4.0


def test_specs_say_what_each_stage_trains():
    settings = settings_with(runs="random,transfer+kd", seeds="0,1")
    run_plan = built(settings, SplitSizes(96, 16, 100))
    teacher, scratch, kd = run_plan.stages[:3]
    assert (teacher.kind, teacher.init, teacher.loss.joint) == ("teacher", "random", "hard_only")
    assert teacher.model.depths == (2, 2, 4, 2) and teacher.model.num_classes == 100
    assert (scratch.name, scratch.seed, scratch.blocks, scratch.distills) == (
        "student_random_seed0",
        0,
        None,
        False,
    )
    assert (kd.blocks.cut_points, kd.teacher_logits) == ((6, 8), ("auto", "auto"))
    assert kd.model.depths == (2, 2, 2, 2) and kd.loss.joint == "weighted_harmonic"
    assert [s.seed for s in run_plan.stages[1:]] == [0, 0, 1, 1]
    assert run_plan.logit_readers() == {(0, 8, 2.0, kd.augment): 1, (1, 8, 2.0, kd.augment): 1}


# --- compatibility: what the code before the plan recorded --------------------------------
# The fingerprints as the pipeline wrote them before (da4bd3d: pipeline/stages.py,
# pipeline/pretrain.py, pipeline/students.py, pipeline/run.py), frozen here: a stage of a
# workdir that code made is resumed and reused only while its stage_config.json agrees.


def old_teacher_fingerprint(s):
    return {
        "seed": s.seed,
        "compute_dtype": s.compute_dtype,
        "data": dataclasses.asdict(s.data),
        "teacher": dataclasses.asdict(s.teacher),
        "finetune": dataclasses.asdict(s.finetune),
    }


def old_student_fingerprint(s, variant_name, seed):
    return {
        **old_teacher_fingerprint(s),
        "student": dataclasses.asdict(s.student),
        "distill": dataclasses.asdict(s.distill),
        "variant": variant_name,
        "student_seed": seed,
    }


def old_pretrain_fingerprint(s):
    fields = ("stored_size", "skip_bad_images", "image_size", "crop_padding", "flip")
    return {
        "seed": s.seed,
        "compute_dtype": s.compute_dtype,
        "data": {k: getattr(s.data, k) for k in fields},
        "teacher": {"model": s.teacher.model, "drop_path": s.teacher.drop_path_rate},
        "pretrain": dataclasses.asdict(s.pretrain),
    }


def old_stage_configs(s, workdir, num_train, source_train=None) -> dict[str, dict]:
    """Every stage directory and its stage_config.json, as the old CompressionRun.run."""
    configs = {}
    pretrain_steps = 0
    if s.pretrain.root:
        configs["pretrain"] = old_pretrain_fingerprint(s)
        pretrain_steps = steps_from_epochs(s.pretrain.epochs, source_train // s.pretrain.batch_size)
        timm = f"timm:{workdir / 'pretrain' / 'timm_model.safetensors'}"
        s = dataclasses.replace(s, teacher=dataclasses.replace(s.teacher, init=timm))
    variants = parse_variants(s.runs)
    if s.evaluate_teacher or any(v.transfer or v.distill for v in variants):
        if not s.teacher.finetuned:
            configs["teacher"] = old_teacher_fingerprint(s)
    for seed in student_seeds(s):
        for row in sweep_rows(s.sweep):
            for variant in variants:
                r = s
                for key, value in row.overrides:
                    section, field = key.split(".")
                    part = dataclasses.replace(getattr(r, section), **{field: value})
                    r = dataclasses.replace(r, **{section: part})
                if variant.long:
                    spe = num_train // s.finetune.batch_size
                    teacher_steps = steps_from_epochs(s.finetune.epochs, spe) + pretrain_steps
                    epochs = max(
                        r.distill.epochs, teacher_steps / (num_train // r.distill.batch_size)
                    )
                    r = dataclasses.replace(
                        r, distill=dataclasses.replace(r.distill, epochs=epochs)
                    )
                name = (
                    f"student_{variant.name}"
                    + (f"_{row.name}" if row.name else "")
                    + (f"_seed{seed}" if s.seeds else "")
                )
                configs.setdefault(name, old_student_fingerprint(r, variant.name, seed))
    return configs


def folder(root, classes, per_class):
    """An image folder that can be counted: the files are listed, never decoded."""
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                (root / split / name / f"{i}.jpg").write_bytes(b"")
    return root


def compat_configs(tmp_path):
    source = folder(tmp_path / "source", "abc", 40)
    target = folder(tmp_path / "target", "de", 50)
    pretrained = pretrained_config.get_config(f"source={source},target={target},smoke")
    pretrained.seeds = "0,1"
    one_row = pretrained_config.get_config(f"source={source},target={target},smoke")
    one_row.runs, one_row.seeds = "transfer+kd", "0,1,2"  # as /work/runs/pretrained's run
    one_row.sweep = "joint=arithmetic,alpha=0.5,distillation=kl,temperature=4"
    table = paper_tables.get_config("table=IV,smoke")
    keep = smoke_config()
    keep.runs, keep.sweep = "random,transfer+kd", "student.keep_blocks=first,even"
    cuts = smoke_config()
    cuts.runs, cuts.student.cut_points = "transfer,random+kd", (1, 3)
    return {
        "demo": (demo.get_config(), DIGITS, None),
        "pretrained": (pretrained, None, None),
        "one sweep row of four keys": (one_row, None, None),
        "table IV sweep": (table, SplitSizes(96, 16, 100), None),
        "keep blocks": (keep, SplitSizes(96, 16, 100), None),
        "cut points": (cuts, SplitSizes(96, 16, 100), None),
    }


def test_every_stage_records_what_the_code_before_the_plan_recorded(tmp_path):
    kinds = set()
    for name, (config, data, source) in compat_configs(tmp_path).items():
        settings = plan.load_settings(config)
        workdir = tmp_path / "work"
        run_plan = plan.build_plan(settings, workdir, data, source)
        kinds |= {s.kind for s in run_plan.stages}
        num_train = run_plan.data.train
        source_train = run_plan.source.train if run_plan.source else None
        old = old_stage_configs(settings, workdir, num_train, source_train)
        new = {s.name: s.record for s in run_plan.stages if not s.given}
        assert [stage for stage in old if stage in new] == list(new), name
        for stage, record in new.items():  # byte for byte, as stage_config.json holds it
            assert json.dumps(record, indent=2) == json.dumps(old[stage], indent=2), (name, stage)
        # Stages the old code trained twice (random students of two keep_blocks policies:
        # the same model, the same recipe) train once; the rows of both read it.
        merged = set(old) - set(new)
        assert merged == (
            {"student_random_student_keep_blockseven"} if name == "keep blocks" else set()
        ), name
    assert kinds == set(plan.STAGE_KINDS) - {"exits"}  # every kind the code before had


def test_the_pretraining_record_ignores_the_target_data(tmp_path):
    source = folder(tmp_path / "source", "abc", 50)  # 150 images: batches of 128
    records = []
    for target in ("t1", "t2"):
        config = pretrained_config.get_config(f"source={source},target={tmp_path / target}")
        folder(tmp_path / target, "de" if target == "t1" else "xyz", 40)
        records.append(built(plan.load_settings(config), None).stage("pretrain").record)
    assert records[0] == records[1]
    config.pretrain.epochs = 3
    assert built(plan.load_settings(config), None).stage("pretrain").record != records[0]
