"""The data-parallel mesh (`swin_flax.training.distributed`): arrays placed on it, batch
sizes checked against it, and training on four devices or two processes of two devices
equal to training on one, with resident data or streamed (each process decoding only its
half of every batch)."""

import json
import os
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.data.batches import epoch_batches, eval_batches
from swin_flax.errors import UserInputError
from swin_flax.training import distributed
from tests.helpers import REPO, finish, free_port, start_processes, tiny_image_folder

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


STREAM_SCRIPT = r"""
import json, sys
import jax
repo, root, out, stage_dir, count, index, address = sys.argv[1:8]
sys.path.insert(0, repo)
count, index = int(count), int(index)
if count > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, count, index)
import numpy as np
from swin_flax.data import sources
from swin_flax.data.augment import AugmentConfig
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings
from swin_flax.training.evaluate import make_top1_fn
from swin_flax.training.loop import train_stage
import swin_flax
from tests.helpers import streamed_folder, tiny_model

reads = {"train": [], "test": []}
read = sources.ImageFolderSource.read
def recorded(self, i):
    reads[self.listing.split_dir.name].append(int(i))
    return read(self, i)
sources.ImageFolderSource.read = recorded

model = tiny_model(num_classes=4)
scores = []
top1 = make_top1_fn(model, streamed_folder(root, "test", workers=2), batch_size=8)
def evaluate(params):
    scores.append(top1(params))
    return scores[-1]
result = train_stage(
    name="tiny", stage_dir=stage_dir, model=model, init_params=swin_flax.init_params(model, 0),
    train_data=streamed_folder(root, "train", workers=2),
    optim_settings=OptimSettings(epochs=1.5, batch_size=8, peak_lr=1e-3, warmup_epochs=0.5),
    loss_settings=LossSettings(joint="hard_only"), augment=AugmentConfig(out_size=8),
    loop_settings=LoopSettings(log_every_steps=3, checkpoint_every_steps=4, progress_bar=False),
    seed=0, evaluate=evaluate, evaluate_every_epochs=1.0,
)
params = jax.tree_util.tree_leaves(result.params)
np.savez(f"{out}/params{index}.npz", *[np.asarray(x.addressable_data(0)) for x in params])
with open(f"{out}/run{index}.json", "w") as f:
    json.dump({"reads": reads, "scores": scores, "steps": result.steps}, f)
"""


def start_stream_processes(root, out, count, devices_each):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices_each}",
    )
    address = f"localhost:{free_port()}"
    out.mkdir(parents=True)
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                STREAM_SCRIPT,
                str(REPO),
                str(root),
                str(out),
                str(out / "stage"),
                str(count),
                str(i),
                address,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


def rows_read(batches, rows: slice, repeat: int = 1) -> Counter:
    """How often each example is read when a process reads `rows` of every batch."""
    return Counter(int(i) for _ in range(repeat) for batch in batches for i in batch[rows])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_streaming_processes_read_disjoint_halves_and_match_one_process(tmp_path):
    """2 processes x 2 devices streaming an image folder: each decodes only its half of
    every global batch (train and test), and the parameters and scores equal those of one
    process x 4 devices."""
    root = tiny_image_folder(tmp_path / "images", n=48, classes=4, side=8)
    procs = start_stream_processes(root, tmp_path / "one", 1, 4)
    procs += start_stream_processes(root, tmp_path / "two", 2, 2)
    for code, stderr in finish(procs, timeout=600):
        assert code == 0, stderr[-3000:]
    one = json.loads((tmp_path / "one" / "run0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"run{i}.json").read_text()) for i in (0, 1)]
    assert one["steps"] == two[0]["steps"] == two[1]["steps"] == 9  # 1.5 epochs of 6 steps
    train = [*epoch_batches(48, 8, seed=0, epoch=0), *epoch_batches(48, 8, seed=0, epoch=1)[:3]]
    test = eval_batches(48, 8)[0]
    for process, rows in zip(two, (slice(0, 4), slice(4, 8))):
        assert Counter(process["reads"]["train"]) == rows_read(train, rows)
        assert Counter(process["reads"]["test"]) == rows_read(test, rows, repeat=2)  # 2 evals
    # Disjoint halves that together are every batch: what one process reads alone.
    assert Counter(one["reads"]["train"]) == rows_read(train, slice(0, 8))
    assert one["scores"] == two[0]["scores"] == two[1]["scores"] and len(one["scores"]) == 2
    single = np.load(tmp_path / "one" / "params0.npz")
    for index in (0, 1):
        double = np.load(tmp_path / "two" / f"params{index}.npz")
        diff = max(float(np.max(np.abs(single[k] - double[k]))) for k in single.files)
        assert diff < 1e-5  # the tolerance of the 4-vs-1 device test
