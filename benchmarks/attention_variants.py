"""Which window-attention formulation is fastest? A/B of attention variants on a whole model.

The model's own implementations are selected with its `attention` field (einsum, xla, cudnn:
see `swin_flax.model.swin.ATTENTION_IMPLEMENTATIONS`); two proposals that model.py does not have yet
are swapped in here as subclasses of `swin_flax.model.swin.WindowAttention` (same parameters), so
they can be measured without editing model.py. For each variant: forward (inference) and
forward+backward img/s of the whole model, and the largest logit difference to the first
variant that ran (named in the output) on the same parameters and images.

    python benchmarks/attention_variants.py --model swin_t --precision bf16 --batch-size 128
    python benchmarks/attention_variants.py --model swin_t --precision fp32 --batch-size 8

Variants:
  einsum       model attention='einsum' (the default): q@k, f32 bias + mask + softmax, @v;
  xla          model attention='xla': jax.nn.dot_product_attention, XLA implementation;
  cudnn        model attention='cudnn': the fused cuDNN kernel (GPU, bf16 only);
  low_softmax  proposal: bias, mask and softmax in the compute dtype instead of float32
               (half the bytes of the attention matrix in bf16; a numerics change);
  onehot_bias  proposal: relative position bias as one_hot(index) @ table instead of a
               gather, so its gradient is a small matmul instead of a scatter-add;
  pallas       proposal: swin_flax.model.pallas_attention, one fused Pallas kernel per (window,
               head) for q@k, bias + mask, softmax and @v (backward recomputes in XLA).
               Not in the default list: off a GPU it runs in Pallas' slow interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common as tp  # noqa: E402  (imports neither jax nor torch)

if __name__ == "__main__":  # XLA's CPU thread pool is sized when jax starts: pin before
    tp.pin_cpu_threads(tp.early_cpu_threads(sys.argv))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from swin_flax.model import swin as swin_model  # noqa: E402
from swin_flax.model.attention import relative_position_index  # noqa: E402
from swin_flax.model.presets import create_model  # noqa: E402
from swin_flax.model.swin import init_params

CURRENT = swin_model.WindowAttention


class _Proposal(CURRENT):
    """The model's WindowAttention with `attend` (and optionally `bias`) replaced."""

    def table_and_index(self):
        """The model's bias parameter (same name, shape and init) and its flat gather index."""
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(stddev=0.02),
            ((2 * self.window_size - 1) ** 2, self.num_heads),
        )
        return table, relative_position_index(self.window_size).reshape(-1)

    def bias(self, tokens):
        table, index = self.table_and_index()
        return table[index].reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)

    @nn.compact
    def __call__(self, x, mask, deterministic):
        windows, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        init = nn.initializers.truncated_normal(0.02)
        qkv = nn.Dense(
            3 * channels, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=init, name="qkv"
        )(x)
        qkv = qkv.reshape(windows, tokens, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = self.attend(q, k, v, self.bias(tokens), mask, head_dim**-0.5)
        out = out.reshape(windows, tokens, channels)
        return nn.Dense(channels, dtype=self.dtype, kernel_init=init, name="proj")(out)

    def attend(self, q, k, v, bias, mask, scale):
        windows, tokens, heads, _ = q.shape
        logits = jnp.einsum("bnhd,bmhd->bhnm", q * scale, k).astype(jnp.float32) + bias[None]
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(-1, nw, heads, tokens, tokens) + mask[None, :, None]
            logits = logits.reshape(windows, heads, tokens, tokens)
        weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
        return jnp.einsum("bhnm,bmhd->bnhd", weights, v)


class LowSoftmax(_Proposal):
    def attend(self, q, k, v, bias, mask, scale):
        windows, tokens, heads, _ = q.shape
        logits = jnp.einsum("bnhd,bmhd->bhnm", q * scale, k)  # stays in the compute dtype
        logits = logits + bias.astype(logits.dtype)[None]
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(-1, nw, heads, tokens, tokens)
            logits = logits + jnp.asarray(mask, logits.dtype)[None, :, None]
            logits = logits.reshape(windows, heads, tokens, tokens)
        return jnp.einsum("bhnm,bmhd->bnhd", jax.nn.softmax(logits, axis=-1), v)


class OnehotBias(_Proposal):
    def bias(self, tokens):
        table, index = self.table_and_index()
        onehot = jax.nn.one_hot(index, table.shape[0], dtype=table.dtype)
        return (onehot @ table).reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)


class PallasFused(_Proposal):
    def attend(self, q, k, v, bias, mask, scale):
        from swin_flax.model.pallas_attention import window_attention

        return window_attention(q, k, v, bias, mask, scale, q.dtype, None, True)


# name -> (model attention field, WindowAttention class to swap in or None)
VARIANTS = {
    "einsum": ("einsum", None),
    "xla": ("xla", None),
    "cudnn": ("cudnn", None),
    "low_softmax": ("einsum", LowSoftmax),
    "onehot_bias": ("einsum", OnehotBias),
    "pallas": ("einsum", PallasFused),
}


@contextlib.contextmanager
def swapped(cls):
    """Swap the class SwinBlock instantiates (looked up in the module at call time)."""
    if cls is not None:
        swin_model.WindowAttention = cls
    try:
        yield
    finally:
        swin_model.WindowAttention = CURRENT


def run_variant(variant, params, images, args):
    attention, cls = VARIANTS[variant]
    model = create_model(
        args.model,
        num_classes=tp.NUM_CLASSES,
        dtype=tp.flax_dtype(args.precision),
        attention=attention,
    )
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))

    def loss(p, x):
        return jnp.mean(model.apply({"params": p}, x, train=False) ** 2)

    train = jax.jit(jax.value_and_grad(loss))
    with swapped(cls), tp.jax_precision(args.precision):
        fwd = forward.lower(params, images[0]).compile()
        bwd = train.lower(params, images[0]).compile() if args.backward else None
        logits = fwd(params, images[0])
    rows = {"logits": np.asarray(logits)}
    settings = dict(repeats=args.repeats, warmup=args.warmup, min_time=args.min_time)
    timing = tp.measure(lambda i: fwd(params, images[i % len(images)]), tp.jax_sync, **settings)
    rows["fwd"] = tp.summarise(timing, args.batch_size)
    if bwd is not None:
        timing = tp.measure(lambda i: bwd(params, images[i % len(images)]), tp.jax_sync, **settings)
        rows["fwd_bwd"] = tp.summarise(timing, args.batch_size)
    return rows


def parse_variants(spec: str) -> list[str]:
    """`--variants`: a comma-separated subset of VARIANTS; unknown names are a usage error
    (before any model is built), not a failed variant."""
    names = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {', '.join(unknown) or repr(spec)}; valid: {', '.join(VARIANTS)}"
        )
    return names


def _rate(row: dict) -> str:
    return f"{row['img_s']:9.1f} img/s [{row['img_s_min']:.1f}, {row['img_s_max']:.1f}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--precision", choices=tp.PRECISIONS, default="fp32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--variants",
        type=parse_variants,
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=0.0)
    ap.add_argument("--no-backward", dest="backward", action="store_false")
    ap.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="CPU runs: pin the process to N cores (applied before jax starts)",
    )
    args = ap.parse_args(argv)
    on_gpu = jax.default_backend() == "gpu"
    default = ["einsum", "xla", "low_softmax", "onehot_bias"]
    if on_gpu and args.precision == "bf16":
        default.append("cudnn")
    variants = args.variants or default

    model = create_model(
        args.model, num_classes=tp.NUM_CLASSES, dtype=tp.flax_dtype(args.precision)
    )
    params = init_params(model, 0)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    images = [jax.random.normal(k, (args.batch_size, 224, 224, 3)) for k in keys]
    device = jax.devices()[0].device_kind
    print(f"{args.model} {args.precision} batch {args.batch_size} on {device}")
    # The logits are compared with the first variant that ran (the first one listed can fail,
    # e.g. cudnn off the GPU); the column names it.
    results, reference, reference_name = {}, None, None
    for variant in variants:
        try:
            rows = run_variant(variant, params, images, args)
        except Exception as err:
            print(f"{variant:12} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        if reference is None:
            reference, reference_name = rows["logits"], variant
        err = float(np.max(np.abs(rows["logits"] - reference)) / np.max(np.abs(reference)))
        results[variant] = rows
        line = f"{variant:12} fwd {_rate(rows['fwd'])}"
        if "fwd_bwd" in rows:
            line += f"   fwd+bwd {_rate(rows['fwd_bwd'])}"
        print(f"{line}   max|dlogits|/max|logits| vs {reference_name} {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
