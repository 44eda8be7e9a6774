"""The command-line programs (train, convert, export, predict), each a `run()` that
[project.scripts] installs (`swin-flax-train`, ...) and a root script calls. The top layer:
it may import every other."""
