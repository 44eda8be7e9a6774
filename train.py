r"""Run the compression framework (paper Algorithm 1) from a config file.

    python train.py                                    # offline demo (configs/demo.py)
    python train.py --config configs/swin_m_kd.py --workdir runs/swin_m_kd
    python train.py --config configs/swin_m_kd.py:smoke --config.distill.epochs=1
    python train.py --options                          # every option, its default and help

Running the same command again resumes: finished stages are skipped and an interrupted
stage continues from its newest checkpoint. On several hosts add --multihost.
"""

import shlex
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

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
    return shlex.join(["python", sys.argv[0], *args, f"--workdir={workdir}"])


def main(argv):
    del argv
    from swin_flax import cli

    if FLAGS.options:
        from swin_flax.settings import describe_options

        print(describe_options())
        return 0
    return cli.run(train, resume_hint=lambda: f"resume with: {resume_command(workdir())}")


def workdir() -> Path:
    if FLAGS.workdir:
        return Path(FLAGS.workdir)
    return default_workdir(
        config_flags.get_config_filename(FLAGS["config"]) if FLAGS.config is not None else None
    )


def train() -> int:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    if FLAGS.multihost:
        start_multihost()
    from configs import demo
    from swin_flax.pipeline.run import run_pipeline
    from swin_flax.training import preemption

    # ml_collections reports a missing config file on first use, as an OSError.
    config = FLAGS.config if FLAGS.config is not None else demo.get_config()
    with preemption.handle_stop_signals():
        rows = run_pipeline(config, workdir())
    if rows:
        print(f"results: {workdir() / 'results.json'} ({len(rows)} rows)")
    else:  # stopped before the first evaluation: there may be no such file to name
        print("results: none (no model was evaluated in this run)")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
