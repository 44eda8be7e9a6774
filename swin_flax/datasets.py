"""Moved: `load_datasets` is in `swin_flax.data`. This alias keeps
`from swin_flax.datasets import load_datasets` working until its last user switches;
then delete this file."""

from swin_flax.data import SOURCES, load_datasets  # noqa: F401
