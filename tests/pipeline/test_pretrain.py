"""swin_flax/pipeline/pretrain.py and configs/pretrained.py: the teacher pretrained on a source
task, written as a timm .safetensors file, Algorithm 1 from that file (`timm:` init, a new
head), the stage reused by later runs, the strong scratch baseline and the regime warning."""

import json

import numpy as np
import pytest
from PIL import Image

import swin_flax
from configs import pretrained as pretrained_config
from swin_flax.pipeline import pretrain, stages
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.students import initial_teacher_params
from swin_flax.weights.sources import load_state_dict

pytestmark = pytest.mark.slow


def image_folder(root, classes, per_class, seed):
    """Colour-coded classes (a learnable signal) with noise, as JPEGs."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for index, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                pixels[..., index % 3] = 40 + 70 * index
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("tasks")
    source = image_folder(base / "source", ["a", "b", "c"], {"train": 40, "test": 10}, 0)
    target = image_folder(base / "target", ["d", "e"], {"train": 40, "test": 10}, 1)
    return source, target


def config_for(source, target, **overrides):
    config = pretrained_config.get_config(f"source={source},target={target},smoke")
    config.eval.throughput_batch_size = 0
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(config, section) if section else config, name, value)
    return config


def test_pretrain_writes_a_timm_file_the_teacher_starts_from_and_later_runs_reuse_it(
    tmp_path, folders, capsys
):
    source, target = folders
    workdir = tmp_path / "run"
    rows = run_pipeline(config_for(source, target), workdir)
    out = capsys.readouterr()

    timm_file = workdir / "pretrain" / stages.TIMM_EXPORT_FILE
    state_dict = load_state_dict(timm_file)
    assert state_dict["head.fc.weight"].shape == (3, 384)  # the source task's 3 classes
    stored = json.loads((workdir / "teacher" / stages.STAGE_CONFIG_FILE).read_text())
    assert stored["teacher"]["init"] == f"timm:{timm_file}"
    # The teacher's fine-tuning starts from the file: every weight but the new 2-class head.
    _, pretrained_params = swin_flax.load_checkpoint(workdir / "pretrain" / "final_model")
    model = swin_flax.create_model("cifar_swin_t_p4", num_classes=2)
    start = initial_teacher_params(f"timm:{timm_file}", model, seed=0)
    assert start["head"]["kernel"].shape == (384, 2)
    # Each final_model/ names its own task's classes: the source's, and the target's.
    from swin_flax.weights.checkpoint import load_class_names

    assert load_class_names(workdir / "pretrain" / "final_model") == ["a", "b", "c"]
    assert load_class_names(workdir / "teacher" / "final_model") == ["d", "e"]
    np.testing.assert_array_equal(
        start["layers_2"]["blocks_3"]["mlp"]["fc1"]["kernel"],
        pretrained_params["layers_2"]["blocks_3"]["mlp"]["fc1"]["kernel"],
    )

    labels = [r["model"] for r in rows]
    assert labels[0] == "cifar_swin_t_p4 (teacher, source task)" and rows[0]["task"] == "source"
    assert "cifar_swin_t_p4 (teacher)" in labels
    strong = next(r for r in rows if r.get("baseline") == "strong scratch")
    assert strong["model"] == "cifar_swin_n_p4 (strong scratch)" and strong["init"] == "random"
    for r in rows[1:]:
        assert {"init", "distillation", "seed", "top1", "val_top1"} <= set(r)
    # The strong baseline trains as many steps as the teacher's pretraining and fine-tuning.
    steps = {
        name: json.loads((workdir / name / stages.STAGE_DONE_FILE).read_text())["steps"]
        for name in ("pretrain", "teacher", "student_random_long_seed0")
    }
    assert steps["student_random_long_seed0"] == steps["pretrain"] + steps["teacher"]
    assert (
        "pretrained teacher:" in out.out
        and "## Recommended" in (workdir / "summary.md").read_text()
    )

    # A second run in the workdir, on another target, finds the pretraining finished.
    done = (workdir / "pretrain" / stages.STAGE_DONE_FILE).stat().st_mtime_ns
    rows_again = run_pipeline(config_for(source, target, runs="transfer"), workdir)
    assert (workdir / "pretrain" / stages.STAGE_DONE_FILE).stat().st_mtime_ns == done
    assert rows_again[0]["top1"] == rows[0]["top1"]


def test_a_teacher_weaker_than_its_transfer_student_is_named_before_kd(tmp_path, folders, capsys):
    """A random 'fine-tuned' teacher: the trained transfer student beats it on validation."""
    source, target = folders
    teacher = swin_flax.create_model("cifar_swin_t_p4", num_classes=2)
    swin_flax.save_checkpoint(tmp_path / "weak", teacher, swin_flax.init_params(teacher, 0))
    config = config_for(source, target, runs="transfer,transfer+kd", **{"pretrain.root": ""})
    config.teacher.finetuned = str(tmp_path / "weak")
    config.distill.epochs = 4
    run_pipeline(config, tmp_path / "run")
    err = capsys.readouterr().err
    assert "warning: the transferred student (student_transfer_seed0) already scores" in err
    assert "distillation will pull it toward a weaker teacher" in err


def test_pretrain_fingerprint_ignores_the_target_data():
    base = pretrained_config.get_config("source=/s,target=/t")
    other = pretrained_config.get_config("source=/s,target=/elsewhere")
    from swin_flax.settings import RunSettings

    a, b = (RunSettings.from_config(c) for c in (base, other))
    assert pretrain.fingerprint(a) == pretrain.fingerprint(b)
    base.pretrain.epochs = 3
    assert pretrain.fingerprint(RunSettings.from_config(base)) != pretrain.fingerprint(a)
