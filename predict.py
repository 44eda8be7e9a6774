"""Top-5 classes of images with a checkpoint or an exported model (swin_flax/commands/predict.py).

The same program as the installed `swin-flax-predict` command; `--help` lists its arguments.
"""

from swin_flax.commands.predict import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
