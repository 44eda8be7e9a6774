"""What the LiteRT export changes while it traces the Flax model, so that TensorFlow's TFLite
converter (TF 2.21) converts and quantizes every Swin; the model code is untouched and every
rewrite computes the same function.

    with litert_tracing():
        function = tf.function(jax2tf.convert(forward), ...).get_concrete_function()

1. A Dense whose input has rank >= 4 and only 1s before the channels (PatchMerging and the
   MLPs of a 1x1 last stage at batch 1: 32-pixel models with 4-pixel patches, the micro
   presets) is computed as an explicit rank-3 batch matmul. The converter fails on such a
   dot_general ("'tfl.batch_matmul' op found invalid output rank, expected 3 but got 4")
   and folds any reshape of the input back into it; inputs with another shape convert.
2. GELU (exact, erf) is emitted as the StableHLO composite 'tfl.gelu', which the converter
   turns into its one builtin GELU op (with an int8 kernel). Traced as erf, it becomes about
   14 ops whose int8 scales reach 1e34, and the int8 interpreter aborts in allocate_tensors.
3. jax 0.10 serializes composites as `vhlo.composite_v2` (StableHLO 1.15), which TF 2.21
   cannot read; while tracing, jax's serializer asks for an older StableHLO version
   (`older_stablehlo_serialization`, the one place that touches jax's private API).
"""

from __future__ import annotations

import contextlib
import importlib

import flax.linen as nn
import jax

# jax offers no public setting for the StableHLO version jax2tf serializes at. This private
# function (jax 0.10: `_module_to_bytecode(module) -> bytes`, serializing at WEEK_4
# compatibility) is replaced while the LiteRT export traces; tests/deploy/
# test_litert_rewrites.py fails if jax renames or changes it. Without it, LiteRT exports
# trace GELU as erf (fp32 and fp16 still convert) and int8 is refused.
_SERIALIZER_MODULE = "jax._src.export._export"
_SERIALIZER_NAME = "_module_to_bytecode"
# StableHLO >= 12 weeks old: 1.13.7 with jax 0.10, which TF 2.21 reads.
_OLDER_COMPATIBILITY = "WEEK_12"
GELU_COMPOSITE_NAME = "tfl.gelu"

_exact_gelu = nn.gelu  # flax's own, kept before any rewrite replaces the module attribute


def flatten_unit_dense_inputs(next_fun, args, kwargs, context):
    """A flax method interceptor: nn.Dense on a (1, ..., 1, C) input of rank >= 4 as
    (1, 1, C) x (1, C, D) batch matmul, the same arithmetic as nn.Dense."""
    module = context.module
    if isinstance(module, nn.Dense) and context.method_name == "__call__":
        x = args[0]
        if x.ndim > 3 and all(d == 1 for d in x.shape[:-1]):
            kernel = module.get_variable("params", "kernel")
            y = jax.lax.dot_general(
                x.reshape(1, 1, x.shape[-1]),
                kernel[None].astype(x.dtype),
                (((2,), (1,)), ((0,), (0,))),
            )
            if module.use_bias:
                y = y + module.get_variable("params", "bias").astype(y.dtype)
            return y.reshape(*x.shape[:-1], kernel.shape[-1])
    return next_fun(*args, **kwargs)


def gelu_composite(x, approximate: bool = False):
    """`nn.gelu` as the composite 'tfl.gelu' (its decomposition is flax's gelu)."""
    composite = jax.lax.composite(
        lambda x, approximate: _exact_gelu(x, approximate=approximate), name=GELU_COMPOSITE_NAME
    )
    return composite(x, approximate=approximate)


def _serializer_module():
    try:
        module = importlib.import_module(_SERIALIZER_MODULE)
    except ImportError:
        return None
    return module if callable(getattr(module, _SERIALIZER_NAME, None)) else None


def composites_supported() -> bool:
    """Whether this jax has the serializer `older_stablehlo_serialization` replaces."""
    return _serializer_module() is not None


def _serialize_at_older_version(module) -> bytes:
    """jax 0.10's `_module_to_bytecode` with WEEK_12 in place of WEEK_4."""
    from jax._src import xla_bridge
    from jax._src.lib import _jax
    from jaxlib.mlir.dialects import stablehlo

    requirement = getattr(stablehlo.StablehloCompatibilityRequirement, _OLDER_COMPATIBILITY)
    version = stablehlo.get_version_from_compatibility_requirement(requirement)
    return _jax.mlir.serialize_portable_artifact(
        module, version, xla_bridge.get_backend().serialize_with_sdy
    )


@contextlib.contextmanager
def older_stablehlo_serialization():
    """While active, jax (and so jax2tf) serializes StableHLO at WEEK_12 compatibility."""
    target = _serializer_module()
    if target is None:
        raise RuntimeError(
            f"jax {jax.__version__} has no {_SERIALIZER_MODULE}.{_SERIALIZER_NAME}; "
            "check composites_supported() first"
        )
    original = getattr(target, _SERIALIZER_NAME)
    setattr(target, _SERIALIZER_NAME, _serialize_at_older_version)
    try:
        yield
    finally:
        setattr(target, _SERIALIZER_NAME, original)


@contextlib.contextmanager
def litert_tracing(*, gelu_as_composite: bool | None = None):
    """The rewrites above, active while the Flax forward is traced for the TFLite converter.

    `gelu_as_composite` None: whenever this jax supports it. `nn.gelu` is replaced as a
    module attribute (swin.Mlp looks it up at call time) and restored afterwards.
    """
    if gelu_as_composite is None:
        gelu_as_composite = composites_supported()
    with contextlib.ExitStack() as stack:
        stack.enter_context(nn.intercept_methods(flatten_unit_dense_inputs))
        if gelu_as_composite:
            stack.enter_context(older_stablehlo_serialization())
            original_gelu = nn.gelu
            nn.gelu = gelu_composite
            stack.callback(setattr, nn, "gelu", original_gelu)
        yield
