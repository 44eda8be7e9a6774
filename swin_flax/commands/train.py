r"""`python train.py` / `swin-flax-train`: run the compression framework (paper Algorithm 1)
from a config file.

    python train.py                                    # offline demo (configs/demo.py)
    python train.py --config configs/swin_m_kd.py --workdir runs/swin_m_kd
    python train.py --config configs/swin_m_kd.py:smoke --config.distill.epochs=1
    python train.py --config configs/swin_m_kd.py --plan   # what it would do, nothing run
    python train.py --options                          # every option, its default and help

Running the same command again resumes: finished stages are skipped and an interrupted
stage continues from its newest checkpoint. On several hosts add --multihost.
"""

import shlex
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

# The package is imported inside the functions: flag errors and --options come at once, and
# --multihost initializes jax.distributed before anything of JAX runs.

config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':arg'.", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and results go (default: runs/<config name>)."
)
flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() first (one process "
    "per host; on SLURM, TPU pods and other known clusters it finds its peers).",
)
flags.DEFINE_string("coordinator_address", None, "--multihost elsewhere: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "--multihost elsewhere: how many processes in all.")
flags.DEFINE_integer("process_id", None, "--multihost elsewhere: this process's index.")
flags.DEFINE_bool(
    "options",
    False,
    "Print every config option (default, valid values, whether it may change on resume, help) "
    "and exit; needs no --config.",
)
flags.DEFINE_bool(
    "plan",
    False,
    "Print the plan (every stage with its model, start, loss and steps, what the workdir "
    "already holds, the teacher logits' disk use) and exit: no data is loaded, nothing trains; "
    "a bad config prints every problem.",
)
FLAGS = flags.FLAGS


def default_workdir(config_arg: str | None) -> Path:
    if not config_arg:
        return Path("runs") / "demo"
    path, _, arg = config_arg.partition(":")
    suffix = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in arg)
    return Path("runs") / (Path(path).stem + (f"_{suffix}" if suffix else ""))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad --config (file, ':arg' or --config.key override) ends
    with one clear line and exit code 2, like every other input mistake."""
    from swin_flax import cli
    from swin_flax.errors import UserInputError

    try:
        return FLAGS(argv)
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as err:
        if cli.debugging():
            raise
        cause = _innermost_in_chain(err, UserInputError)
        if cause is not None:  # our config file's own check
            message = str(cause)
        elif isinstance(err, (KeyError, AttributeError)):  # an override names no config key
            detail = err.args[0] if err.args else err
            while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError)
                detail = detail.args[0]
            message = "unknown config key in a --config.* override: " + str(detail).replace(
                "\n", " "
            )
        else:  # absl's message; for an error inside a config file it holds the traceback
            message = cli.flag_error_message(str(err))
        cli.report_error(f"{message}\nSee python train.py --helpshort.")
        sys.exit(cli.USAGE_EXIT_CODE)


def _innermost_in_chain(err: BaseException, kind: type) -> BaseException | None:
    """The innermost exception of `kind` among err and the errors it was raised from.

    ml_collections re-raises an error from get_config() as a new exception of the same
    type whose message is the formatted traceback; the original, with our message, is
    the innermost one."""
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            found = err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return found


def start_multihost() -> None:
    import jax

    # CPU processes need a collectives backend to talk to each other (GPUs and TPUs
    # have their own); setting it is harmless elsewhere.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def resume_command(workdir: Path) -> str:
    """This very command, with --workdir made explicit: running it again resumes."""
    args, skip_next = [], False
    for arg in sys.argv[1:]:
        if skip_next:
            skip_next = False
        elif arg in ("--workdir", "-workdir"):
            skip_next = True  # '--workdir DIR' as two arguments
        elif not arg.lstrip("-").startswith("workdir="):
            args.append(arg)
    command = ["python", sys.argv[0]] if sys.argv[0].endswith(".py") else [sys.argv[0]]
    return shlex.join([*command, *args, f"--workdir={workdir}"])


def main(argv):
    del argv
    from swin_flax import cli

    if FLAGS.options:
        from swin_flax.settings import describe_options

        print(describe_options())
        return 0
    if FLAGS.plan:
        return cli.run(print_plan)
    return cli.run(train, resume_hint=lambda: f"resume with: {resume_command(workdir())}")


def workdir() -> Path:
    if FLAGS.workdir:
        return Path(FLAGS.workdir)
    return default_workdir(
        config_flags.get_config_filename(FLAGS["config"]) if FLAGS.config is not None else None
    )


def config():
    from swin_flax.errors import UserInputError

    try:
        from configs import demo
    except ImportError:
        if FLAGS.config is None:
            raise UserInputError(
                "no --config given, and the offline demo (configs/demo.py) is not importable "
                "here: run from the repository, or give --config FILE"
            ) from None

    # ml_collections reports a missing config file on first use, as an OSError.
    return FLAGS.config if FLAGS.config is not None else demo.get_config()


def print_plan() -> int:
    """--plan: the plan of this config in this workdir, nothing loaded or trained."""
    logging.set_verbosity(logging.WARNING)
    print(plan_text(config(), workdir()))
    return 0


def plan_text(config, workdir: Path) -> str:
    """The plan of `config` in `workdir` as --plan prints it (every problem: an error)."""
    from swin_flax.pipeline import plan

    run_plan = plan.build_plan(plan.load_settings(config), workdir)
    return describe(run_plan, workdir)


def train() -> int:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    if FLAGS.multihost:
        start_multihost()
    from swin_flax.pipeline.run import run_pipeline
    from swin_flax.training import preemption

    with preemption.handle_stop_signals():
        rows = run_pipeline(config(), workdir())
    if rows:
        print(f"results: {workdir() / 'results.json'} ({len(rows)} rows)")
    else:  # stopped before the first evaluation: there may be no such file to name
        print("results: none (no model was evaluated in this run)")
    return 0


def run() -> None:
    """The `swin-flax-train` command (and `python train.py`)."""
    app.run(main, flags_parser=parse_flags)


# ----------------------------------------------------------------------------- --plan


def describe(run_plan, workdir: Path) -> str:
    """What running `run_plan` (a RunPlan) in `workdir` would do, stage by stage: each
    one's model, start, loss and length, and what the workdir already holds."""
    from swin_flax.pipeline import stages

    data = run_plan.data
    size = f"{data.train:,} training images" if data.train is not None else data.unknown
    lines = [
        f"Plan for {workdir}: {len(run_plan.stages)} stages; {size}, {data.num_classes} classes"
    ]
    for number, spec in enumerate(run_plan.stages, 1):
        shared = [r.stage for r in run_plan.rows if r.stage == spec.name]
        status = (
            f"given: {spec.given}"
            if spec.given
            else stages.stage_status(workdir / spec.name, spec.record)
        )
        lines += [
            f"{number:>3}. {spec.name} ({spec.title}): {status}",
            f"       model  {spec.model.describe()}",
            f"       init   {_init_text(spec)}",
            f"       loss   {_loss_text(spec.loss)}"
            + (f" + stage features {list(spec.features)} (teacher live)" if spec.features else "")
            + (
                " for the exit, from the full path; the full path: labels"
                if spec.kind == "exits"
                else ""
            ),
            f"       steps  {_steps_text(spec, run_plan)}",
        ]
        if len(shared) > 1 and spec.kind != "exits":  # exits: its full path and its exit
            lines.append(
                f"       results rows  {len(shared)} (sweep rows that resolve to this stage)"
            )
    lines.append(f"Results: {len(run_plan.rows)} rows in {workdir / 'results.json'}")
    lines.append(f"Teacher logits: {_logits_text(run_plan, workdir)}")
    return "\n".join(lines)


def _init_text(spec) -> str:
    blocks = spec.blocks
    if spec.kind == "exits":
        return f"{spec.init}; its exit takes the blocks {blocks.kept.text} (shared, not copied)"
    if blocks is None:
        return "the given checkpoint" if spec.given else spec.init
    tail = f"the rest {blocks.tail_init}"
    if blocks.cut_points is not None:
        return f"the teacher's blocks, cut points {blocks.cut_points} ({tail})"
    if blocks.kept is None:
        return f"the teacher's blocks the importance policy picks once measured ({tail})"
    return f"the teacher's blocks {blocks.kept.text} ({blocks.kept.policy} policy)"


def _loss_text(loss) -> str:
    if loss.joint == "hard_only":
        return f"labels only (label smoothing {loss.label_smoothing:g})"
    weights = {
        "arithmetic": f"alpha {loss.alpha:g}",
        "linear_alpha": f"alpha {loss.alpha_start:g} to {loss.alpha_end:g}",
        "weighted_harmonic": f"w_d {loss.w_d:g}, w_s {loss.w_s:g}",
    }.get(loss.joint, "")
    kl = f" at temperature {loss.temperature:g}" if loss.distillation == "kl" else ""
    return f"{loss.joint} of {loss.distillation}{kl} distillation and labels" + (
        f" ({weights})" if weights else ""
    )


def _steps_text(spec, run_plan) -> str:
    epochs, batch = spec.optim.epochs, spec.optim.batch_size
    if spec.given:
        return "none (not trained)"
    if spec.steps is None:
        return f"{epochs:g} epochs of batch {batch}; the count once {run_plan.data.unknown}"
    return f"{spec.steps:,} ({epochs:g} epochs of {spec.steps_per_epoch:,} batches of {batch})"


def _logits_text(run_plan, workdir: Path) -> str:
    """Which recordings `distill.teacher_logits` makes, and their size on disk."""
    from swin_flax.pipeline.run import compute_dtype
    from swin_flax.training.logit_store import describe_bytes, disk_bytes, store_dtype_name

    recorded = []
    readers = run_plan.logit_readers()
    for spec in run_plan.stages:
        mode, dtype = spec.teacher_logits or ("live", "")
        key = (spec.seed, spec.optim.batch_size, spec.optim.epochs, spec.augment)
        if spec.steps is None or not (mode == "record" or (mode == "auto" and readers[key] > 1)):
            continue
        store = store_dtype_name(dtype, compute_dtype(spec.compute_dtype))
        recorded.append((key, disk_bytes(spec.steps, key[1], spec.model.num_classes, store)))
    if not recorded:
        return "none recorded (each distilling student runs the teacher live)"
    total = sum(dict(recorded).values())  # one recording per schedule
    return (
        f"{len(dict(recorded))} recording(s) read by {len(recorded)} students, "
        f"{describe_bytes(total)} in {workdir / 'teacher_logits'}"
    )
