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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
    if FLAGS.multihost:
        import jax

        jax.distributed.initialize()
    from configs import common, demo
    from swin_flax.config_check import check_config_keys
    from swin_flax.pipeline import run_pipeline
    from swin_flax.errors import is_user_error, user_errors

    config = FLAGS.config if FLAGS.config is not None else demo.get_config()
    workdir = Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(
        config_flags.get_config_filename(FLAGS["config"]) if FLAGS.config is not None else None)
    try:
        check_config_keys(config.to_dict(), common.get_base_config().to_dict())
        rows = run_pipeline(config, workdir)
    except user_errors() as err:
        if os.environ.get("SWIN_FLAX_DEBUG") or not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results: {workdir / 'results.json'} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    app.run(main)
