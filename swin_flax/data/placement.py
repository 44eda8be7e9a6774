"""Where a run's images live (data.placement), decided before any image is decoded.

    device   every split decoded once into host memory and put whole on every device; a
             step gathers its batch there (the fast path for sets that fit: CIFAR at 32 px
             is 0.18 GB)
    stream   each process decodes its share of every batch from disk, a few batches ahead;
             host and device memory hold batches, not the data set
    auto     device when the decoded splits fit in MAX_DATA_FRACTION of one device's memory
             and of the host's available memory, else stream; one line says which and why

The size is estimated from the listing (the number of examples x the stored size, or the
first file's header or the TFDS metadata without it). Several processes take process 0's
choice: a resident split on one and a streamed one on another would not run the same step.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from swin_flax.data.dataset import ArrayDataset
from swin_flax.errors import UserInputError

# Each device holds a resident data set (replicated) beside the model, optimizer state and
# activations; beyond this fraction of its memory the run would fail mid-way with an
# out-of-memory error from deep inside XLA. The host keeps the decoded arrays too.
MAX_DATA_FRACTION = 0.5


def device_memory_bytes() -> tuple[int, str]:
    """(bytes one device can hold, what that is): the accelerator's limit, or on CPU the
    host's physical memory shared by its local devices."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return physical // jax.local_device_count(), "host memory per CPU device"


def host_memory_bytes() -> int:
    """The host memory available now (MemAvailable), or its physical size elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes(data) -> int:
    """What a split takes decoded: its array, or the estimate of a streamed split."""
    return data.images.nbytes if isinstance(data, ArrayDataset) else data.resident_bytes()


@dataclasses.dataclass(frozen=True)
class Decision:
    placement: str  # device or stream
    reason: str  # the line that says why


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _size_words(datasets) -> str:
    count = sum(len(d) for d in datasets)
    return f"{_gib(sum(resident_bytes(d) for d in datasets))} decoded ({count:,} images)"


def device_fit_problem(datasets) -> str | None:
    """Why resident `datasets` would not fit on a device (the preflight rule), or None."""
    needed = sum(resident_bytes(d) for d in datasets)
    available, what = device_memory_bytes()
    if needed <= MAX_DATA_FRACTION * available:
        return None
    return (
        f"the data sets take {_size_words(datasets)} on every device, more than "
        f"{MAX_DATA_FRACTION:.0%} of the {_gib(available)} of {what}"
    )


def host_fit_problem(datasets) -> str | None:
    needed = sum(resident_bytes(d) for d in datasets)
    available = host_memory_bytes()
    if needed <= MAX_DATA_FRACTION * available:
        return None
    return (
        f"the data sets take {_size_words(datasets)}, more than {MAX_DATA_FRACTION:.0%} of the "
        f"{_gib(available)} of available host memory"
    )


FIT_ADVICE = (
    "stream them from disk with data.placement=stream (or auto), store the images smaller "
    "with data.stored_size (e.g. 32 or 64: the resize to data.image_size happens on the "
    "device), or use fewer images"
)


def decide(requested: str, datasets) -> Decision:
    """The placement of a run's splits (listed, not decoded): `requested` when it is device
    or stream (device refused when it cannot fit), auto's choice otherwise."""
    problem = device_fit_problem(datasets) or host_fit_problem(datasets)
    if requested == "device":
        if problem:
            raise UserInputError(f"data.placement=device: {problem}; {FIT_ADVICE}")
        return Decision("device", "data.placement=device")
    if requested == "stream":
        return Decision("stream", "data.placement=stream")
    if problem:
        decision = Decision("stream", f"data.placement=auto chose stream: {problem}")
    else:
        available, what = device_memory_bytes()
        decision = Decision(
            "device",
            f"data.placement=auto chose device: {_size_words(datasets)} fit in "
            f"{MAX_DATA_FRACTION:.0%} of the {_gib(available)} of {what} and of the "
            f"{_gib(host_memory_bytes())} of available host memory",
        )
    return _agreed(decision)


def _agreed(decision: Decision) -> Decision:
    """Process 0's decision on every process (host memory may differ between hosts)."""
    if jax.process_count() == 1:
        return decision
    from jax.experimental import multihost_utils

    streams = multihost_utils.broadcast_one_to_all(np.int32(decision.placement == "stream"))
    placement = "stream" if int(streams) else "device"
    if placement == decision.placement:
        return decision
    return Decision(placement, f"data.placement=auto chose {placement} (process 0's choice)")


def check_fits_devices(datasets) -> None:
    """Resident splits must leave room for the model on every device (streamed ones hold
    batches only)."""
    resident = [d for d in datasets if isinstance(d, ArrayDataset)]
    problem = device_fit_problem(resident) if resident else None
    if problem:
        raise UserInputError(f"{problem}; {FIT_ADVICE}")
