"""Test-session settings: CPU only, and a persistent XLA compilation cache.

Many tests compile the same small train step (each stage builds a fresh jitted closure);
the on-disk cache turns every compilation after the first into a lookup, also in the
subprocesses the tests start (they inherit JAX_COMPILATION_CACHE_DIR).
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "swin_flax_test_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tests run few steps of small models: LLVM's optimisations cost more compile time
# (about 2x) than they save in run time. Numerics are unchanged.
CPU_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", CPU_TEST_XLA_FLAGS)


def pytest_unconfigure(config):
    """pytest puts back Python's own unraisable-exception hook when the session ends,
    dropping the filter a failed checkpoint read installs (`_files.quiet_failed_restore_reports`);
    the tests' deliberately damaged checkpoints would then print tensorstore's late 'Event
    loop is closed' reports at interpreter exit. Put the filter back for that exit."""
    import atexit

    from swin_flax import _files

    atexit.register(_files.ignore_closed_event_loops)
