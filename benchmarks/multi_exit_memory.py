"""Compiled memory (and step time) of the multi-exit step against the distillation step
(issue 28).

    python benchmarks/multi_exit_memory.py [--teacher cifar_swin_t_p4] [--student cifar_swin_n_p4]
        [--image-size 32] [--classes 5] [--batch 64] [--time-rounds 0] [--out results.json]

Both steps exactly as the trainer builds them, lowered and compiled for this machine, then
`compiled.memory_analysis()`: the arguments (parameters, optimizer state, the batch), the
temporaries (activations kept for the backward pass, workspaces) and the outputs. The
distillation step trains the student (Adam state) with the teacher frozen and run live
(its parameters an argument); the multi-exit step trains one model of the teacher's shape
whose exit takes the student's blocks (its full path is the teacher). Memory, not speed: the
numbers depend on the model, batch and compiler, not on the load of the machine.

With `--time-rounds R` > 0 it also times the steps the two ways of getting a teacher and a
student take, on the same batch in one process: the teacher's fine-tuning step (labels
only), the student's distillation step, and the multi-exit step (both at once). Each round
runs 5 steps of each in turn, so a change in the machine's load hits all of them alike;
the median step time over the rounds is reported, and the ratio of the multi-exit step to
the teacher's plus the student's (the run's stages have the same step counts in both
settings of results/beyond_logits.md, so it is the ratio of their training times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2**20


def _compiled_memory(step, state, teacher_input, batch: int, image_size: int, classes: int):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
    labels = rng.integers(0, classes, (batch,), np.int32)
    compiled = step.lower(state, teacher_input, images, labels, jax.random.PRNGKey(0)).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        raise SystemExit("this backend reports no memory analysis")
    found = {
        "arguments_mib": stats.argument_size_in_bytes / MIB,
        "temporaries_mib": stats.temp_size_in_bytes / MIB,
        "outputs_mib": stats.output_size_in_bytes / MIB,
        "aliased_mib": stats.alias_size_in_bytes / MIB,
    }
    found["arguments_plus_temporaries_mib"] = found["arguments_mib"] + found["temporaries_mib"]
    return {k: round(v, 2) for k, v in found.items()}


def _step_seconds(steps: dict, rounds: int, batch: int, image_size: int, classes: int) -> dict:
    """Median seconds per step of each (step, state, teacher_input), interleaved rounds."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
    labels = rng.integers(0, classes, (batch,), np.int32)
    key = jax.random.PRNGKey(0)
    states = {name: state for name, (_, state, _) in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds + 1):  # the first round compiles and warms up: not counted
        for name, (step, _, teacher_input) in steps.items():
            start = time.perf_counter()
            for _ in range(5):
                states[name], metrics, _ = step(states[name], teacher_input, images, labels, key)
            jax.block_until_ready(metrics)
            times[name].append((time.perf_counter() - start) / 5)
    return {name: round(statistics.median(found[1:]), 4) for name, found in times.items()}


def measure(
    teacher_name: str,
    student_name: str,
    image_size: int,
    classes: int,
    batch: int,
    time_rounds: int = 0,
):
    from swin_flax.data.augment import AugmentConfig
    from swin_flax.model import presets
    from swin_flax.model.exits import MultiExitSwin
    from swin_flax.model.swin import SwinTransformer, init_params
    from swin_flax.settings import LossSettings
    from swin_flax.training.distributed import make_mesh
    from swin_flax.training.multi_exit import make_multi_exit_step
    from swin_flax.training.optim import make_optimizer
    from swin_flax.training.step import create_train_state, make_train_step
    from swin_flax.weights import keep_blocks as kb

    teacher_config = presets.preset_config(teacher_name).replace(
        img_size=image_size, num_classes=classes
    )
    student_config = presets.preset_config(student_name).replace(
        img_size=image_size, num_classes=classes
    )
    teacher, student = SwinTransformer(teacher_config), SwinTransformer(student_config)
    kept = kb.first_blocks(teacher_config.depths, student_config.depths)  # the run's exit
    tx, schedule = make_optimizer(peak_lr=2e-4, total_steps=1000, warmup_steps=100)
    common = dict(
        tx=tx,
        schedule=schedule,
        total_steps=1000,
        augment=AugmentConfig(out_size=image_size),
        mesh=make_mesh(),
    )
    loss = LossSettings()  # the paper's: weighted harmonic of MSE and the labels
    distill = make_train_step(student=student, teacher=teacher, loss_settings=loss, **common)
    distill_state = create_train_state(init_params(student, 0), tx)
    teacher_input = {"params": init_params(teacher, 1)}
    multi = make_multi_exit_step(
        model=MultiExitSwin(teacher_config, (kept,)),
        full_path_smoothing=0.1,
        exit_loss=loss,
        **common,
    )
    multi_state = create_train_state(init_params(teacher, 1), tx)
    timed = {}
    if time_rounds:
        fine_tune = make_train_step(
            student=teacher,
            teacher=None,
            loss_settings=LossSettings(joint="hard_only", label_smoothing=0.1),
            **common,
        )
        seconds = _step_seconds(
            {
                "teacher fine-tuning": (
                    fine_tune,
                    create_train_state(init_params(teacher, 1), tx),
                    None,
                ),
                "student distillation": (distill, distill_state, teacher_input),
                "multi-exit": (multi, multi_state, None),
            },
            time_rounds,
            batch,
            image_size,
            classes,
        )
        two_models = seconds["teacher fine-tuning"] + seconds["student distillation"]
        timed = {
            "seconds_per_step (median)": seconds,
            "multi-exit / (teacher + student)": round(seconds["multi-exit"] / two_models, 3),
        }
    return {
        "teacher": teacher_name,
        "student (exit)": student_name,
        "exit blocks": kb.format_blocks(kept),
        "image_size": image_size,
        "batch": batch,
        "backend": jax.default_backend(),
        "distillation step (student trained, teacher frozen and live)": _compiled_memory(
            distill, distill_state, teacher_input, batch, image_size, classes
        ),
        "multi-exit step (one model, full path + exit)": _compiled_memory(
            multi, multi_state, None, batch, image_size, classes
        ),
        **timed,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="cifar_swin_t_p4")
    parser.add_argument("--student", default="cifar_swin_n_p4")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-rounds", type=int, default=0, help=">0: also time the steps")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = measure(
        args.teacher, args.student, args.image_size, args.classes, args.batch, args.time_rounds
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
