"""Throughput of swin_flax against PyTorch/timm on the same device (paper Table X).

Measures, in one process on one device:

  infer  inference img/s of Swin-N/M/T/S/B at 224 with a 100-class head:
         Flax (jitted `model.apply(..., train=False)`) vs timm eager vs timm torch.compile;
  kd     the distillation train step (Swin-T teacher forward + student forward/backward +
         AdamW, MSE + weighted-harmonic loss, w_d=13, w_s=1): our jitted `make_train_step`
         step, whose input is the uint8 32x32 data set gathered, augmented and resized to
         224 on the device (backend `flax`), the same step fed 224x224 uint8 images with no
         crop/flip/resize (`flax_pre224`, optional), and an equivalent PyTorch step on timm
         models fed a pre-made 224 float batch (`torch_eager`, `torch_compile`);
  input  the on-device input path alone (gather + crop + flip + normalise + resize 32->224);
  flops  (opt-in) forward FLOPs per image: analytic count vs XLA's cost analysis vs torch's
         FlopCounterMode, at batch 1.

Precision: `fp32` is float32 end to end on both sides (JAX matmul precision 'highest', torch
TF32 off); `bf16` is bf16 compute with float32 parameters on both sides (Flax `dtype=bf16`,
torch AMP autocast bf16 + channels_last).

Examples (see benchmarks/README.md):

    python benchmarks/throughput.py --models swin_n,swin_t --precisions fp32 --batch-size 2 \
        --repeats 3 --parts infer,kd,input --json /tmp/bench_cpu.json
    python benchmarks/throughput.py --report a.json b.json      # merged tables, no run

The models, FLOP model, timing and statistics live in benchmarks/common.py and
benchmarks/workloads.py (both free of side effects on import); this file is the CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Runnable as `python benchmarks/throughput.py` from the repository root without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (imports neither jax nor torch)

if __name__ == "__main__":
    # JAX preallocates 75% of GPU memory by default, which would starve torch in the same
    # process; and XLA's CPU thread pool is sized when jax starts. Both are set here, before
    # jax is imported; an explicit XLA_PYTHON_CLIENT_PREALLOCATE in the environment wins.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    common.pin_cpu_threads(common.early_cpu_threads(sys.argv))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402

from benchmarks import workloads as wl  # noqa: E402
from benchmarks.common import (  # noqa: E402
    BACKENDS,
    MODELS,
    NOISY_IQR_PERCENT,
    PAPER_IMG_S,
    PARTS,
    PRECISIONS,
    TORCH_BACKENDS,
    device_name,
    forward_flops,
    iqr_percent,
    kd_step_flops,
    parse_peaks,
)

# ----------------------------------------------------------------------------- reporting


def fmt(value, spec=".1f", none="-") -> str:
    return none if value is None else format(value, spec)


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "img_s" not in a or "img_s" not in b:
        return "-"
    return f"{a['img_s'] / b['img_s']:.2f}"


def print_variants(results: list[dict], by_key: dict, part: str) -> None:
    """Rows of non-default Flax attention implementations, against flax/eager/compile."""
    rows = [r for r in results if r["part"] == part and "[" in r["backend"] and "img_s" in r]
    for r in rows:
        base = r["backend"].split("[")[0]
        ref, e, c = (
            by_key.get((part, r["model"], r["precision"], b))
            for b in (base, "torch_eager", "torch_compile")
        )
        print(
            f"  {r['model']:7} {r['precision']:5} {r['backend']:20} {r['img_s']:9.1f} img/s"
            f"  vs {base} {ratio(r, ref)}  vs eager {ratio(r, e)}  vs compile {ratio(r, c)}"
        )


def print_report(results: list[dict], envs: list[dict]) -> None:
    by_key = {(r["part"], r.get("model"), r["precision"], r["backend"]): r for r in results}
    for env in envs:
        print(
            f"\n# device: {device_name(env)}; jax {env['versions']['jax']}, "
            f"torch {env['versions']['torch']}, timm {env['versions']['timm']}"
        )
        print(f"# command: {env['command']}")
    if envs:
        print(f"# {envs[-1]['precision_note']}")

    print("\n## all measurements (img/s: median [min, max] over repeats; IQR in %)")
    head = (
        f"{'part':6} {'model':7} {'prec':5} {'backend':20} {'batch':>5} {'img/s':>9} "
        f"{'min':>9} {'max':>9} {'IQR%':>5} {'ms/call':>9} {'GFLOP/img':>9} "
        f"{'TFLOP/s':>8} {'MFU%':>6} {'compile_s':>9}"
    )
    print(head)
    for r in results:
        if r["part"] == "flops":
            continue
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            print(
                f"{r['part']:6} {r.get('model') or '-':7} {r['precision']:5} "
                f"{r['backend']:20} {'':>5} {'-- ' + why[:100]}"
            )
            continue
        iqr = iqr_percent(r)
        gflop = r.get("flops_per_img")
        print(
            f"{r['part']:6} {r.get('model') or '-':7} {r['precision']:5} {r['backend']:20} "
            f"{r['batch']:>5} {r['img_s']:>9.1f} {r['img_s_min']:>9.1f} {r['img_s_max']:>9.1f} "
            f"{iqr:>5.1f} {r['ms_per_call']:>9.2f} {fmt(gflop and gflop / 1e9, '.2f'):>9} "
            f"{fmt(r.get('tflop_s'), '.2f'):>8} {fmt(r.get('mfu') and 100 * r['mfu'], '.1f'):>6} "
            f"{r['compile_s']:>9.1f}"
        )

    precisions = [
        p for p in PRECISIONS if any(r["precision"] == p and r["part"] != "flops" for r in results)
    ]
    infer_models = [
        m for m in MODELS if any(r["part"] == "infer" and r.get("model") == m for r in results)
    ]
    if infer_models:
        print("\n## Table X: inference throughput, 224x224, 100 classes (img/s, median)")
        cols = "".join(
            f" | {p}: {'flax':>8} {'eager':>8} {'compile':>8} {'f/e':>5} {'f/c':>5}"
            for p in precisions
        )
        print(f"{'model':7} {'params(M)':>9} {'paper':>6}{cols}")
        for m in infer_models:
            cells, params = "", None
            for p in precisions:
                f, e, c = (
                    by_key.get(("infer", m, p, b)) for b in ("flax", "torch_eager", "torch_compile")
                )
                params = params or next(
                    (x["params"] for x in (f, e, c) if x and "params" in x), None
                )
                cells += (
                    f" | {p}: {fmt(f and f.get('img_s')):>8} {fmt(e and e.get('img_s')):>8} "
                    f"{fmt(c and c.get('img_s')):>8} {ratio(f, e):>5} {ratio(f, c):>5}"
                )
            print(f"{m:7} {fmt(params and params / 1e6, '.1f'):>9} {PAPER_IMG_S[m]:>6}{cells}")
        print("f/e = flax / torch_eager, f/c = flax / torch_compile; paper = Table X (GPU unnamed)")
        print_variants(results, by_key, "infer")

    kd_models = [
        m for m in MODELS if any(r["part"] == "kd" and r.get("model") == m for r in results)
    ]
    if kd_models:
        print("\n## distillation train step (teacher fwd + student fwd/bwd + AdamW), img/s")
        print(
            f"{'student':7} {'prec':5} {'flax':>8} {'pre224':>8} {'eager':>8} {'compile':>8} "
            f"{'f/e':>5} {'f/c':>5} {'MFU flax%':>9}"
        )
        for m in kd_models:
            for p in precisions:
                f, f2, e, c = (by_key.get(("kd", m, p, b)) for b in BACKENDS)
                if not any((f, f2, e, c)):
                    continue
                mfu = f.get("mfu") if f else None
                print(
                    f"{m:7} {p:5} {fmt(f and f.get('img_s')):>8} "
                    f"{fmt(f2 and f2.get('img_s')):>8} {fmt(e and e.get('img_s')):>8} "
                    f"{fmt(c and c.get('img_s')):>8} {ratio(f, e):>5} {ratio(f, c):>5} "
                    f"{fmt(mfu and 100 * mfu):>9}"
                )
        print_variants(results, by_key, "kd")
        print(
            "flax includes the on-device input path (gather + augment + 32->224 resize); "
            "pre224 = same step fed 224 uint8 images (gather + normalise only); torch is fed "
            "a pre-made 224 float batch"
        )

    inputs = [r for r in results if r["part"] == "input" and "img_s" in r]
    if inputs:
        print("\n## on-device input path alone (gather + crop + flip + normalise + 32->224)")
        for r in inputs:
            kd = [
                x
                for x in results
                if x["part"] == "kd"
                and x["backend"] == "flax"
                and x["precision"] == r["precision"]
                and "img_s" in x
            ]
            share = "; ".join(
                f"{x['model']} KD step at {x['img_s']:.1f} img/s -> input path "
                f"~{100 * x['img_s'] / r['img_s']:.1f}% of step time"
                for x in kd
            )
            print(
                f"{r['precision']:5} batch {r['batch']}: {r['img_s']:.1f} img/s "
                f"[{r['img_s_min']:.1f}, {r['img_s_max']:.1f}]  {share}"
            )

    flops = [r for r in results if r["part"] == "flops" and "analytic_flops" in r]
    if flops:
        print("\n## forward GFLOP per image at 224 (analytic 2xMACs vs XLA vs torch counter)")
        for r in flops:
            torch_flops = r.get("torch_flop_counter")
            print(
                f"{r['model']:7} analytic {r['analytic_flops'] / 1e9:7.3f}  "
                f"xla {fmt(r.get('xla_flops') and r['xla_flops'] / 1e9, '7.3f')}  "
                f"torch {fmt(torch_flops and torch_flops / 1e9, '7.3f')}"
            )
    print()


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated registry names (default: all five)",
    )
    ap.add_argument(
        "--parts", default="infer,kd,input", help=f"comma-separated subset of {','.join(PARTS)}"
    )
    ap.add_argument(
        "--precisions",
        default=None,
        help="fp32,bf16 (default: both on an accelerator, fp32 on CPU)",
    )
    ap.add_argument(
        "--backends",
        default="flax,torch_eager,torch_compile",
        help=f"subset of {','.join(BACKENDS)} (flax_pre224: KD step without the "
        "32->224 input path)",
    )
    ap.add_argument(
        "--batch-size",
        default="auto",
        help="'auto' (accelerator: infer 256, kd 128, input 256; CPU: 8, 4, 8), N, or "
        "entries like 'kd=64,swin_b=128,swin_s:infer=192'",
    )
    ap.add_argument(
        "--flax-attention",
        default=wl.DEFAULT_ATTENTION,
        help=f"Flax window-attention implementations to run, comma-separated, from "
        f"{','.join(wl.ATTENTION_IMPLS)} (non-default ones are labelled "
        "flax[impl]; cudnn needs an NVIDIA GPU and bf16)",
    )
    ap.add_argument(
        "--kd-students",
        default="swin_m,swin_n",
        help="students for the kd part (those also in --models are run)",
    )
    ap.add_argument("--teacher", default="swin_t")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats (default 7 on an accelerator, 3 on CPU)",
    )
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls after the compile")
    ap.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds per repeat, calls per repeat chosen to fill it "
        "(default 1.0 on an accelerator, 0 on CPU = one call per repeat)",
    )
    ap.add_argument("--rotate", type=int, default=3, help="distinct input batches cycled through")
    ap.add_argument(
        "--peak-tflops",
        default=None,
        help="peak for MFU: '989' or 'bf16=989,fp32=67' (default by device kind)",
    )
    ap.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (default, reduce-overhead, max-autotune)",
    )
    ap.add_argument(
        "--no-channels-last",
        action="store_true",
        help="keep torch models and inputs NCHW-contiguous",
    )
    ap.add_argument(
        "--timm-fused-attn",
        choices=("default", "on", "off"),
        default="default",
        help="timm WindowAttention SDPA path (timm's default for Swin is off)",
    )
    ap.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="CPU runs: pin the process to N cores and give torch N threads "
        "(default: all cores). On a loaded machine use 1: torch's OpenMP pool "
        "slows down many-fold when one of its threads is descheduled",
    )
    ap.add_argument("--json", default=None, help="write every number and the environment here")
    ap.add_argument(
        "--report",
        nargs="+",
        default=None,
        metavar="JSON",
        help="print the merged tables of earlier --json files and exit",
    )
    return ap.parse_args(argv)


def split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; valid: {', '.join(allowed)}")
    return items


def report_files(paths: list[str]) -> None:
    results, envs = {}, []
    for path in paths:
        blob = json.loads(Path(path).read_text())
        envs.append(blob["env"])
        for r in blob["results"]:  # later files override earlier ones
            results[(r["part"], r.get("model"), r["precision"], r["backend"])] = r
    print_report(list(results.values()), envs)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        report_files(args.report)
        return
    plat = jax.default_backend()
    accel = plat != "cpu"
    models = split(args.models, MODELS, "models")
    parts = split(args.parts, PARTS, "parts")
    precisions = split(
        args.precisions or ("fp32,bf16" if accel else "fp32"), PRECISIONS, "precisions"
    )
    backends = split(args.backends, BACKENDS, "backends")

    notes = []
    torch_device = None
    tm = wl.torch_modules()
    if tm.error:
        notes.append(f"torch/timm unavailable ({tm.error}): torch backends skipped")
    elif plat == "gpu":
        if tm.torch.cuda.is_available():
            torch_device = "cuda"
        else:
            notes.append(
                "JAX runs on a GPU but torch sees no CUDA device: torch backends "
                "skipped (the comparison must be on the same device)"
            )
    elif plat == "cpu":
        torch_device = "cpu"
    else:
        notes.append(f"torch has no {plat} backend here: torch backends skipped")
    if torch_device is None:
        backends = [b for b in backends if b not in TORCH_BACKENDS]

    settings = wl.Settings(
        platform=plat,
        torch_device=torch_device,
        repeats=args.repeats or (7 if accel else 3),
        warmup=args.warmup,
        min_time=args.min_time if args.min_time is not None else (1.0 if accel else 0.0),
        rotate=max(1, args.rotate),
        channels_last=not args.no_channels_last,
        compile_mode=args.compile_mode,
        timm_fused_attn=args.timm_fused_attn,
        teacher=args.teacher,
        batch_spec=wl.parse_batch_spec(args.batch_size),
    )
    torch_config = wl.configure_torch(torch_device, args.cpu_threads) if torch_device else None
    env = wl.environment(settings, torch_config, args.cpu_threads)
    peaks, peak_source = parse_peaks(
        args.peak_tflops, env.get("torch_cuda_device") or env["jax_device_kind"]
    )
    env.update(
        peak_tflops=peaks,
        peak_source=peak_source,
        notes=notes,
        settings=dataclasses.asdict(settings) | {"batch_spec": args.batch_size},
    )

    print(f"device: {device_name(env)}; jax backend {plat}; torch device {torch_device}")
    print(env["precision_note"])
    print(f"MFU peak: {peaks} TFLOP/s ({peak_source})")
    for note in notes:
        print(f"NOTE: {note}")

    attentions = split(args.flax_attention, wl.ATTENTION_IMPLS, "flax attention")
    jobs = []  # (part, model, precision, backend, attention)
    if "flops" in parts:
        jobs += [("flops", m, "fp32", "analysis", None) for m in models]
    if "input" in parts and "flax" in backends:
        jobs += [("input", None, p, "flax", None) for p in precisions]
    if "infer" in parts:
        jobs += [
            ("infer", m, p, b, a)
            for m in models
            for p in precisions
            for b in backends
            for a in (attentions if b == "flax" else [None])
            if b != "flax_pre224"
        ]
    if "kd" in parts:
        students = [m for m in split(args.kd_students, MODELS, "kd students") if m in models]
        if not students:
            print(f"NOTE: kd part: none of --kd-students {args.kd_students} is in --models")
        jobs += [
            ("kd", m, p, b, a)
            for m in students
            for p in precisions
            for b in backends
            for a in (attentions if b.startswith("flax") else [None])
        ]

    # torch rows first: JAX's GPU allocator keeps the memory it has grown to, while torch hands
    # its cache back (torch.cuda.empty_cache), so torch-after-JAX could run out of memory.
    jobs.sort(key=lambda job: job[3] not in TORCH_BACKENDS)
    results = []
    t_all = time.perf_counter()
    for part, model, precision, backend, attention in jobs:
        batch = wl.batch_size(settings, model, part)
        label = wl.flax_label(backend, attention) if attention else backend
        record = {
            "part": part,
            "model": model,
            "precision": precision,
            "backend": label,
            "batch": batch,
        }
        if attention:
            record["attention"] = attention
        print(f"... {part} {model or ''} {precision} {label} batch {batch}", flush=True)
        start = time.perf_counter()
        try:
            if part == "flops":
                record.update(wl.flops_crosscheck(model))
            elif part == "input":
                record.update(wl.input_flax(precision, batch, settings))
            elif part == "infer" and backend == "flax":
                record.update(wl.infer_flax(model, precision, batch, settings, attention))
            elif part == "infer":
                record.update(wl.infer_torch(model, precision, batch, backend, settings))
            elif backend in ("flax", "flax_pre224"):
                record.update(
                    wl.kd_flax(
                        model,
                        precision,
                        batch,
                        settings,
                        pre_resized=backend == "flax_pre224",
                        attention=attention,
                    )
                )
            else:
                record.update(wl.kd_torch(model, precision, batch, backend, settings))
        except Exception as err:  # keep going: one OOM must not lose the other rows
            traceback.print_exc()
            record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        record["wall_s"] = round(time.perf_counter() - start, 2)
        if "img_s" in record and part in ("infer", "kd"):
            flops = (
                forward_flops(model) if part == "infer" else kd_step_flops(settings.teacher, model)
            )
            record["flops_per_img"] = flops
            record["tflop_s"] = record["img_s"] * flops / 1e12
            peak = (peaks or {}).get(precision)
            record["peak_tflops"] = peak
            record["mfu"] = record["tflop_s"] / peak if peak else None
        if "img_s" in record:
            print(
                f"    {record['img_s']:.1f} img/s [{record['img_s_min']:.1f}, "
                f"{record['img_s_max']:.1f}], compile {record['compile_s']:.1f}s, "
                f"wall {record['wall_s']:.1f}s",
                flush=True,
            )
            warn_if_noisy(record, plat, args.cpu_threads)
        results.append(record)
        write_json(args.json, env, results)  # after every row: a killed run keeps its rows
        wl.release_memory()
    env["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    env["load_average_end"] = os.getloadavg()

    write_json(args.json, env, results)
    print_report(results, [env])
    if args.json:
        print(f"wrote {args.json}")


def warn_if_noisy(record: dict, plat: str, cpu_threads: int | None) -> None:
    """Flag (in the JSON too) a row whose repeats disagree too much for its median to mean much."""
    iqr = iqr_percent(record)
    if iqr <= NOISY_IQR_PERCENT:
        return
    record["noisy"] = True
    advice = ""
    if plat == "cpu" and cpu_threads != 1:
        advice = (
            "; on a loaded machine rerun with --cpu-threads 1 (torch's thread pool slows "
            "down many-fold when one of its threads is descheduled)"
        )
    elif plat == "cpu":
        advice = "; the machine is probably loaded (see the load average in the JSON)"
    print(
        f"    WARNING: noisy row: IQR {iqr:.0f}% of the median (> {NOISY_IQR_PERCENT:.0f}%), "
        f"its img/s and ratios are unreliable{advice}",
        flush=True,
    )


def write_json(path: str | None, env: dict, results: list[dict]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
