"""Export a swin_flax checkpoint for deployment (see swin_flax/commands/export.py).

The same program as the installed `swin-flax-export` command; `--help` lists its arguments.
"""

from swin_flax.commands.export import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
