r"""Run the compression framework (paper Algorithm 1) from a config file.

    python train.py                                    # offline demo (configs/demo.py)
    python train.py --config configs/swin_m_kd.py --workdir runs/swin_m_kd
    python train.py --config configs/swin_m_kd.py:smoke --config.distill.epochs=1

Running the same command again resumes: finished stages are skipped and an interrupted
stage continues from its newest checkpoint. On several hosts add --multihost.
"""

import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, optionally with ':arg'.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go "
                    "(default: runs/<config name>).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
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
    from swin_flax.errors import UserInputError

    try:
        return FLAGS(argv)
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as err:
        if os.environ.get("SWIN_FLAX_DEBUG"):
            raise
        cause = _innermost_in_chain(err, UserInputError)
        if cause is not None:  # our config file's own check
            message = str(cause)
        elif isinstance(err, (KeyError, AttributeError)):  # an override names no config key
            detail = err.args[0] if err.args else err
            while isinstance(detail, BaseException) and detail.args:  # AttributeError(KeyError)
                detail = detail.args[0]
            message = ("unknown config key in a --config.* override: "
                       + str(detail).replace("\n", " "))
        else:  # absl's message; for an error inside a config file it holds the traceback
            message = str(err)
        print(f"error: {message}\nSee python train.py --helpshort.", file=sys.stderr)
        sys.exit(2)


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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    if FLAGS.multihost:
        import jax

        jax.distributed.initialize()
    from configs import common, demo
    from swin_flax.config_check import check_config_keys
    from swin_flax.pipeline import run_pipeline
    from swin_flax.errors import user_errors

    try:
        config = FLAGS.config if FLAGS.config is not None else demo.get_config()
        config_values = config.to_dict()
    except OSError as err:  # ml_collections reports a missing config file on first use
        print(f"error: {err}", file=sys.stderr)
        return 2
    workdir = Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(
        config_flags.get_config_filename(FLAGS["config"]) if FLAGS.config is not None else None)
    try:
        check_config_keys(config_values, common.get_base_config().to_dict())
        rows = run_pipeline(config, workdir)
    except user_errors() as err:
        if os.environ.get("SWIN_FLAX_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results: {workdir / 'results.json'} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
