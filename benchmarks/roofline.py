"""How much FLOPs utilisation can a Swin forward or KD step reach at all? A roofline bound.

MFU counts only matrix FLOPs, but most of a Swin block's kernels are memory-bound: its
GEMMs are narrow (96-768 channels), and LayerNorm, the 49x49 attention softmax, GELU and the
residual adds move whole activations through device memory. This script models the bytes
that must cross device memory per image when every elementwise op is fused into a
neighbouring kernel as XLA and Inductor do with cuBLAS GEMMs, and attention is not one fused
kernel (cuDNN has none for 49-token windows; see RESULTS.md):

    per token and block, in activation elements (C channels, h heads, N = 49 window tokens):
      LayerNorm 1 (roll/partition fused into its write)   read C, write C
      qkv GEMM                                             read C, write 3C
      q@k^T, softmax, attn@v                               read 3C, write+read logits (h*N),
                                                           write+read weights (h*N), write C
      proj GEMM + residual add in its epilogue             read 2C, write C
      LayerNorm 2                                          read C, write C
      fc1 GEMM + GELU in its epilogue                      read C, write 4C
      fc2 GEMM + residual add in its epilogue              read 5C, write C
    = 26C + 4hN elements, plus patch embedding, patch merging and the head.

Weights are read once per batch (negligible at batch >= 128). A training step moves about
three times the forward's bytes for the student (backward reads the saved activations and
writes their gradients) and once the teacher's, like its FLOPs. Time is at least
max(FLOPs / peak, bytes / bandwidth), so MFU <= (FLOPs / peak) / (bytes / bandwidth) when
memory dominates. Even this ideal fusion caps the MFU well under 35% (run it to see).

    python benchmarks/roofline.py                      # H100 SXM datasheet: 989 TFLOP/s, 3.35 TB/s
    python benchmarks/roofline.py --peak-tflops 989 --bandwidth-tbs 4.8   # H200
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import IMG_SIZE, MODELS, NUM_CLASSES, forward_flops  # noqa: E402
from swin_flax.model.config import window_and_shift  # noqa: E402
from swin_flax.model.presets import preset  # noqa: E402


def forward_traffic_elements(
    *,
    embed_dim: int,
    depths,
    num_heads,
    img_size: int = IMG_SIZE,
    patch_size: int = 4,
    in_chans: int = 3,
    window_size: int = 7,
    num_classes: int = NUM_CLASSES,
    **_,
) -> dict[str, int]:
    """Activation elements read + written per image by the forward pass (model above)."""
    res = img_size // patch_size
    dim = embed_dim
    tokens = res * res
    elements = {
        "patch_embed": tokens * (patch_size * patch_size * in_chans + dim + 2 * dim),
        "blocks": 0,
        "attention_matrices": 0,
        "patch_merging": 0,
        "head": 0,
    }
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        if i > 0:
            # 2x2 gather + LayerNorm over 4C (read C_prev*4, write 4C_prev) + reduction GEMM.
            res //= 2
            tokens = res * res
            elements["patch_merging"] += tokens * (4 * dim + 4 * dim + 4 * dim + 2 * dim)
            dim *= 2
        window, _ = window_and_shift(res, window_size, shift=False)
        window_tokens = window * window
        elements["blocks"] += depth * tokens * 26 * dim
        elements["attention_matrices"] += depth * tokens * 4 * heads * window_tokens
    elements["head"] = tokens * dim * 2 + dim + num_classes  # final norm, pool, head
    return elements


def forward_bytes(name: str, bytes_per_element: int, fused_attention: bool = False) -> float:
    """Bytes per image; fused_attention drops the attention matrices (a flash-style kernel
    keeps them on chip), the one term a different attention kernel could remove."""
    elements = forward_traffic_elements(**preset(name))
    if fused_attention:
        elements.pop("attention_matrices")
    return float(sum(elements.values()) * bytes_per_element)


def ceiling(flops: float, traffic: float, peak_tflops: float, bandwidth_tbs: float) -> dict:
    compute_s = flops / (peak_tflops * 1e12)
    memory_s = traffic / (bandwidth_tbs * 1e12)
    return {
        "compute_us": compute_s * 1e6,
        "memory_us": memory_s * 1e6,
        "max_img_s": 1.0 / max(compute_s, memory_s),
        "mfu_ceiling": compute_s / max(compute_s, memory_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35)
    parser.add_argument("--bytes-per-element", type=int, default=2, help="2: bf16, 4: fp32")
    parser.add_argument("--teacher", default="swin_t")
    args = parser.parse_args()
    device = (args.peak_tflops, args.bandwidth_tbs)

    print(
        f"peak {args.peak_tflops} TFLOP/s, bandwidth {args.bandwidth_tbs} TB/s, "
        f"{args.bytes_per_element} bytes per activation element"
    )
    print(
        f"{'workload':26} {'GFLOP/img':>9} {'MB/img':>7} {'compute us':>10} "
        f"{'memory us':>9} {'max img/s':>9} {'MFU ceiling':>11} {'fused attn':>10}"
    )
    size = args.bytes_per_element

    def traffic(name, fused=False):
        return forward_bytes(name, size, fused)

    rows = [
        (f"{name} forward", forward_flops(name), traffic(name), traffic(name, True))
        for name in MODELS
    ]
    for student in ("swin_m", "swin_n"):
        flops = forward_flops(args.teacher) + 3 * forward_flops(student)
        rows.append(
            (
                f"KD step, {student} student",
                flops,
                traffic(args.teacher) + 3 * traffic(student),
                traffic(args.teacher, True) + 3 * traffic(student, True),
            )
        )
    for label, flops, moved, moved_fused in rows:
        c = ceiling(flops, moved, *device)
        fused = ceiling(flops, moved_fused, *device)
        print(
            f"{label:26} {flops / 1e9:9.2f} {moved / 1e6:7.1f} {c['compute_us']:10.1f} "
            f"{c['memory_us']:9.1f} {c['max_img_s']:9,.0f} {100 * c['mfu_ceiling']:10.1f}% "
            f"{100 * fused['mfu_ceiling']:9.1f}%"
        )


if __name__ == "__main__":
    main()
