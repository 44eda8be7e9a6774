"""Compiled memory of the multi-exit step against the distillation step (issue 28).

    python benchmarks/multi_exit_memory.py [--teacher cifar_swin_t_p4] [--student cifar_swin_n_p4]
        [--image-size 32] [--classes 5] [--batch 64] [--out results.json]

Both steps exactly as the trainer builds them, lowered and compiled for this machine, then
`compiled.memory_analysis()`: the arguments (parameters, optimizer state, the batch), the
temporaries (activations kept for the backward pass, workspaces) and the outputs. The
distillation step trains the student (Adam state) with the teacher frozen and run live
(its parameters an argument); the multi-exit step trains one model of the teacher's shape
whose exit takes the student's blocks (its full path is the teacher). Memory, not speed: the
numbers depend on the model, batch and compiler, not on the load of the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def measure(teacher_name: str, student_name: str, image_size: int, classes: int, batch: int):
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
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="cifar_swin_t_p4")
    parser.add_argument("--student", default="cifar_swin_n_p4")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = measure(args.teacher, args.student, args.image_size, args.classes, args.batch)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
