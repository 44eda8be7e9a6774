"""The benchmark scripts run from a fresh install (tiny settings on CPU; the numbers are not
checked for speed, only for being measured and reported consistently)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# What importing a module may not do: import torch/timm, read sys.argv (e.g. --cpu-threads),
# set XLA_FLAGS / XLA_PYTHON_CLIENT_PREALLOCATE or pin the CPU affinity. (jax itself sets
# TF_CPP_MIN_LOG_LEVEL and TPU_SKIP_MDS_QUERY when imported, hence only these two variables.)
IMPORT_CHECK = """
import os, sys
names = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE")
env, cores = [os.environ.get(n) for n in names], os.sched_getaffinity(0)
sys.argv = ["bench", "--cpu-threads", "1", "--no-such-flag"]
import {module}
assert not {{"torch", "timm"}} & set(sys.modules), "imported torch/timm"
assert [os.environ.get(n) for n in names] == env, "set an XLA variable"
assert os.sched_getaffinity(0) == cores, "pinned the process"
assert "jax" not in sys.modules or {jax_ok}, "imported jax"
"""


@pytest.mark.parametrize(
    "module, jax_ok",
    [
        ("benchmarks.common", False),  # shared: not even jax (a CLI pins threads before jax starts)
        ("benchmarks.workloads", True),
        ("benchmarks.throughput", True),
        ("benchmarks.roofline", True),
        ("benchmarks.attention_variants", True),
        ("benchmarks.profile_kernels", True),
        ("benchmarks.data_memory", False),
        ("benchmarks.cpu_gemm", False),
        ("benchmarks.multi_exit_memory", True),
    ],
)
@pytest.mark.multiprocess
def test_importing_a_benchmark_module_has_no_side_effects(module, jax_ok):
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(module=module, jax_ok=jax_ok)],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_cpu_is_named_by_its_microarchitecture(monkeypatch, tmp_path):
    """lscpu says "AMD EPYC" for Zen 4 and Zen 5 alike, whose fp32 GEMM ceilings differ 2x."""
    from benchmarks import common

    def cpuinfo(family, model, flags):
        text = (
            f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\n"
            f"model\t\t: {model}\nmodel name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: {flags}\n\n"
            "processor\t: 1\n"
        )
        (tmp_path / "cpuinfo").write_text(text)
        real = Path

        def fake_path(name):
            return real(tmp_path / "cpuinfo") if name == "/proc/cpuinfo" else real(name)

        monkeypatch.setattr(common, "Path", fake_path)
        return common.cpu_identity()

    zen4 = cpuinfo(25, 17, "fma avx2 avx512f avx512_bf16")
    assert zen4["microarchitecture"] == "Zen 4" and zen4["avx512f"] and zen4["model"] == 17
    assert cpuinfo(25, 1, "fma avx2")["microarchitecture"] == "Zen 3"
    assert cpuinfo(26, 2, "fma avx2 avx512f")["microarchitecture"] == "Zen 5"


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.torch
def test_throughput_script_measures_flax_and_timm_and_writes_json(tmp_path):
    out = tmp_path / "cpu.json"
    run_script(
        "benchmarks/throughput.py",
        "--models",
        "swin_n",
        "--parts",
        "infer,input",
        "--backends",
        "flax,torch_eager",
        "--batch-size",
        "1",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--json",
        str(out),
    )
    rows = {(r["part"], r["backend"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("infer", "flax"), ("infer", "torch_eager"), ("input", "flax")}
    for key in (("infer", "flax"), ("infer", "torch_eager")):
        row = rows[key]
        assert "error" not in row, row
        assert row["params"] == 20_490_286  # the same architecture on both sides
        assert row["flops_per_img"] == 6_146_211_840  # analytic 2 x MACs, as RESULTS.md
        assert len(row["img_s_each"]) == 2 and row["img_s_min"] <= row["img_s"] <= row["img_s_max"]
        iqr = 100 * (row["img_s_q3"] - row["img_s_q1"]) / row["img_s"]
        assert row.get("noisy", False) == (iqr > 20)  # flagged (and warned about) when noisy
    assert rows[("input", "flax")]["img_s"] > 0

    report = run_script("benchmarks/throughput.py", "--report", str(out))
    table_row = next(line for line in report.splitlines() if line.startswith("swin_n "))
    flax, eager = rows[("infer", "flax")]["img_s"], rows[("infer", "torch_eager")]["img_s"]
    assert f"{flax / eager:.2f}" in table_row  # the Table X line carries the flax/eager ratio


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kernel_profile_reads_back_the_trace(tmp_path):
    out = run_script(
        "benchmarks/profile_kernels.py",
        "--model",
        "swin_n",
        "--batch-size",
        "1",
        "--calls",
        "1",
        "--precision",
        "fp32",
        "--top",
        "5",
        "--trace-dir",
        str(tmp_path / "trace"),
    )
    summary = out.split("ms of kernels per call")[1]
    shares = {
        line.split()[0]: float(line.split()[3].rstrip("%"))
        for line in summary.splitlines()[1:]
        if line.strip().endswith("%") and not line.strip()[0].isdigit()
    }
    assert "gemm" in shares and 99.0 <= sum(shares.values()) <= 101.0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_data_memory_measures_both_placements_and_the_loader(tmp_path):
    sys.path.insert(0, str(ROOT))
    from tests.helpers import tiny_image_folder

    root = tiny_image_folder(tmp_path / "images", n=40, side=16)
    rows = run_script(
        "benchmarks/data_memory.py",
        "epoch",
        "--root",
        str(root),
        "--images",
        "20",
        "--stored-size",
        "8",
        "--batch-size",
        "4",
        "--placements",
        "device,stream",
    )
    epochs = [json.loads(line) for line in rows.splitlines()]
    assert [(r["placement"], r["images"]) for r in epochs] == [("device", 20), ("stream", 20)]
    assert all(r["peak_rss_mb"] >= r["peak_rss_added_mb"] > 0 and r["epoch_s"] > 0 for r in epochs)
    loader = json.loads(
        run_script(
            "benchmarks/data_memory.py",
            "loader",
            "--root",
            str(root),
            "--stored-size",
            "8",
            "--batch-size",
            "4",
            "--workers",
            "2",
        )
    )
    assert loader["images"] == 36 and loader["images_per_s"] > 0  # 10 batches, first untimed


def test_roofline_traffic_model_counts_swin_t_by_hand():
    sys.path.insert(0, str(ROOT))
    from benchmarks.roofline import ceiling, forward_traffic_elements
    from swin_flax.model.presets import preset

    elements = forward_traffic_elements(**preset("swin_t"))
    # 26C per token and block; tokens 56^2, 28^2, 14^2, 7^2; channels 96..768; depths 2,2,6,2.
    assert elements["blocks"] == 26 * (2 * 3136 * 96 + 2 * 784 * 192 + 6 * 196 * 384 + 2 * 49 * 768)
    # 4 h N per token and block: logits and weights, each written and read once.
    assert elements["attention_matrices"] == 4 * 49 * (
        2 * 3136 * 3 + 2 * 784 * 6 + 6 * 196 * 12 + 2 * 49 * 24
    )
    bound = ceiling(flops=1e9, traffic=1e7, peak_tflops=1000.0, bandwidth_tbs=2.0)
    assert bound["compute_us"] == pytest.approx(1.0) and bound["memory_us"] == pytest.approx(5.0)
    assert bound["mfu_ceiling"] == pytest.approx(0.2)
    assert bound["max_img_s"] == pytest.approx(200_000)


# Kernel names from the traces of both sides (XLA GPU/CPU, Inductor, torch eager CUDA/CPU).
KERNEL_NAME_CLASSES = [
    # Inductor: the prefix decides, whatever aten ops the fused name lists after it.
    ("triton_poi_fused_addmm_gelu_view_3", "elementwise"),
    ("triton_poi_fused_convolution_0", "elementwise"),
    ("triton_poi_fused_bmm_14", "elementwise"),
    ("triton_poi_fused__to_copy_1", "elementwise"),
    ("triton_per_fused__softmax_add_5", "softmax/reduce"),
    ("triton_red_fused_native_layer_norm_2", "softmax/reduce"),
    ("triton_tem_fused_mm_0", "gemm"),
    ("triton_mm", "gemm"),
    ("## Call CompiledFxGraph fz3kzbxq6y7 ##", "unattributed (compiled graph)"),
    # XLA GPU
    ("gemm_fusion_dot.12", "gemm"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "gemm"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1", "gemm"),
    ("input_reduce_fusion", "softmax/reduce"),
    ("triton_softmax_3", "softmax/reduce"),
    ("loop_convert_fusion", "elementwise"),
    ("loop_add_fusion", "elementwise"),
    ("transpose_copy_fusion", "copy/transpose"),
    ("copy_bitcast_fusion", "copy/transpose"),
    # XLA CPU
    ("ynn_fusion.12", "gemm"),
    ("multiply_bitcast_fusion", "elementwise"),
    ("transpose_copy_fusion.3", "copy/transpose"),
    ("slice_concatenate_fusion", "copy/transpose"),
    # torch eager (CPU ops; CUDA kernels)
    ("aten::addmm", "gemm"),
    ("aten::mm", "gemm"),
    ("aten::bmm", "gemm"),
    ("aten::mkldnn_convolution", "gemm"),
    ("aten::native_layer_norm", "softmax/reduce"),
    ("aten::_softmax", "softmax/reduce"),
    ("aten::gelu", "elementwise"),
    ("aten::add", "elementwise"),
    ("aten::cat", "copy/transpose"),
    ("aten::index", "copy/transpose"),
    ("aten::copy_", "copy/transpose"),
    ("aten::roll", "copy/transpose"),
    (
        "void at::native::unrolled_elementwise_kernel<at::native::CUDAFunctor_add<float>, "
        "at::detail::Array<char*, 3>>",
        "elementwise",
    ),
]


@pytest.mark.parametrize("name, expected", KERNEL_NAME_CLASSES)
def test_kernel_names_are_classed_like_their_work(name, expected):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import profile_kernels

    assert profile_kernels.classify(name) == expected


@pytest.mark.slow  # compiles two train steps
def test_multi_exit_memory_reports_both_steps_compiled_memory(tmp_path):
    out = tmp_path / "memory.json"
    args = ["--teacher", "swin_pico", "--student", "swin_pico_n", "--batch", "4"]
    args += ["--time-rounds", "1", "--out"]
    run_script("benchmarks/multi_exit_memory.py", *args, str(out))
    found = json.loads(out.read_text())
    assert found["exit blocks"] == "0,1;0,1;0,1;0,1" and found["backend"] == "cpu"
    for step in (
        "distillation step (student trained, teacher frozen and live)",
        "multi-exit step (one model, full path + exit)",
    ):
        memory = found[step]
        assert memory["arguments_mib"] > 0 and memory["temporaries_mib"] > 0
        total = memory["arguments_mib"] + memory["temporaries_mib"]
        assert memory["arguments_plus_temporaries_mib"] == pytest.approx(total, abs=0.02)
    seconds = found["seconds_per_step (median)"]
    assert set(seconds) == {"teacher fine-tuning", "student distillation", "multi-exit"}
    ratio = seconds["multi-exit"] / (
        seconds["teacher fine-tuning"] + seconds["student distillation"]
    )
    assert found["multi-exit / (teacher + student)"] == pytest.approx(ratio, abs=0.002)
