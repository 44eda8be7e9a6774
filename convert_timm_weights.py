"""Convert Swin weights between timm/PyTorch/transformers and swin_flax
(swin_flax/commands/convert.py).

The same program as the installed `swin-flax-convert` command; `--help` lists its arguments.
"""

from swin_flax.commands.convert import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
