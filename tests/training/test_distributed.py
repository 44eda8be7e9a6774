"""The data-parallel mesh (`swin_flax.training.distributed`): arrays placed on it, batch
sizes checked against it, and training on four devices or two processes of two devices
equal to training on one."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.errors import UserInputError
from swin_flax.training import distributed
from tests.helpers import REPO, finish, start_processes

MULTI_DEVICE_SCRIPT = r"""
import sys, jax, numpy as np
sys.path.insert(0, sys.argv[1])
from tests.helpers import run_tiny_stage
from swin_flax.training.distributed import make_mesh
import swin_flax
assert jax.device_count() == 4, jax.devices()
teacher = swin_flax.create_model("swin_pico", num_classes=4)
teacher = (teacher, swin_flax.init_params(teacher, 3))
one = run_tiny_stage(sys.argv[2] + "/one", mesh=make_mesh(jax.devices()[:1]), steps_epochs=1, teacher=teacher)
four = run_tiny_stage(sys.argv[2] + "/four", mesh=make_mesh(jax.devices()), steps_epochs=1, teacher=teacher)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(four.params)))
print("MAX_PARAM_DIFF", diff)
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_four_devices_match_one_device(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(REPO), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    diff = float(out.stdout.split("MAX_PARAM_DIFF")[1])
    assert diff < 1e-5


def max_param_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
    outcomes = finish(
        start_processes(tmp_path / "one", 1, 4) + start_processes(tmp_path / "two", 2, 2)
    )
    for code, stderr in outcomes:
        assert code == 0, stderr[-3000:]
    for stage in ("teacher", "student_transfer_kd"):
        _, one = swin_flax.load_checkpoint(tmp_path / "one" / stage / "final_model")
        _, two = swin_flax.load_checkpoint(tmp_path / "two" / stage / "final_model")
        assert max_param_diff(one, two) < 1e-5  # the tolerance of the 4-vs-1 device test
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [r["top1"] for r in one] == [r["top1"] for r in two]


def test_the_mesh_has_one_data_axis_over_the_given_devices():
    mesh = distributed.make_mesh(jax.devices()[:1])
    assert mesh.axis_names == (distributed.DATA_AXIS,) and mesh.devices.size == 1
    assert distributed.make_mesh().devices.size == jax.device_count()
    assert distributed.batch_sharded(mesh).spec == jax.sharding.PartitionSpec("data")
    assert distributed.replicated(mesh).spec == jax.sharding.PartitionSpec()


def test_arrays_put_on_the_mesh_keep_their_values_and_shardings():
    mesh = distributed.make_mesh()
    value = np.arange(12, dtype=np.int32).reshape(4, 3)
    batch = distributed.put_global(value, distributed.batch_sharded(mesh))
    assert batch.sharding == distributed.batch_sharded(mesh)
    np.testing.assert_array_equal(np.asarray(batch), value)
    tree = distributed.put_replicated({"w": np.ones((2, 2), np.float32), "b": [1.0, 2.0]}, mesh)
    assert tree["w"].sharding == distributed.replicated(mesh)
    np.testing.assert_array_equal(np.asarray(tree["b"]), [1.0, 2.0])
    assert distributed.is_main_process()  # one process: it is process 0


def test_a_batch_that_does_not_divide_over_the_devices_names_a_fix():
    four_devices = SimpleNamespace(devices=np.empty(4))  # only the device count is read
    distributed.check_batch_size(8, four_devices)
    with pytest.raises(
        UserInputError,
        match=r"batch_size 10 must be divisible by the number of devices \(4\).*use e.g. 8",
    ):
        distributed.check_batch_size(10, four_devices)
