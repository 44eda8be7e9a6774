r"""Run the compression framework (paper Algorithm 1) from a config file.

    python train.py                                    # offline demo (configs/demo.py)
    python train.py --config configs/swin_m_kd.py --workdir runs/swin_m_kd
    python train.py --config configs/swin_m_kd.py:smoke --config.distill.epochs=1
    python train.py --config configs/swin_m_kd.py --plan   # what it would do, nothing run
    python train.py --options                          # every option, its default and help

Running the same command again resumes: finished stages are skipped and an interrupted
stage continues from its newest checkpoint. On several hosts add --multihost.
"""

from swin_flax.commands.train import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
