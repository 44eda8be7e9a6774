"""The LiteRT export's tracing rewrites (`swin_flax.deploy.litert_rewrites`): each computes
what the model computes, is undone afterwards, and the one patch of jax's private API still
finds what it patches (this test fails first when jax changes it)."""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.deploy import litert_rewrites


def tensorflow_or_skip():
    from swin_flax.deploy.formats import keep_triton_out_after_tensorflow

    tf = pytest.importorskip("tensorflow")
    keep_triton_out_after_tensorflow()  # a later torch import would crash: see formats.py
    return tf


def test_jax_still_has_the_serializer_the_litert_export_replaces():
    # If this fails, jax renamed or changed `_module_to_bytecode`: LiteRT exports then trace
    # GELU as erf (fp32/fp16 still work) and int8 LiteRT is refused. Update
    # litert_rewrites._serialize_at_older_version to the new jax.
    assert litert_rewrites.composites_supported()
    module = litert_rewrites._serializer_module()
    original = getattr(module, litert_rewrites._SERIALIZER_NAME)
    assert list(inspect.signature(original).parameters) == ["module"]
    with litert_rewrites.older_stablehlo_serialization():
        patched = getattr(module, litert_rewrites._SERIALIZER_NAME)
        assert patched is litert_rewrites._serialize_at_older_version
    assert getattr(module, litert_rewrites._SERIALIZER_NAME) is original


def test_the_older_serialization_writes_a_version_jax_can_read_back():
    from jax import export as jax_export

    fn = jax.jit(lambda x: litert_rewrites.gelu_composite(x) * 2.0)
    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    with litert_rewrites.older_stablehlo_serialization():
        exported = jax_export.export(fn)(spec)
    x = jnp.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(exported.call(x), 2.0 * nn.gelu(x, approximate=False), atol=1e-6)


class _Head(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(5, name="reduction")(x)


@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (1, 1, 1, 1, 8), (2, 1, 1, 8), (1, 2, 2, 8)])
def test_the_dense_rewrite_computes_what_dense_computes(shape):
    model = _Head()
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    params = model.init(jax.random.PRNGKey(1), x)
    with jax.default_matmul_precision("highest"):
        expected = model.apply(params, x)
        with nn.intercept_methods(litert_rewrites.flatten_unit_dense_inputs):
            got = model.apply(params, x)
            text = str(jax.make_jaxpr(lambda v: model.apply(params, v))(x))
    assert got.shape == expected.shape == (*shape[:-1], 5)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    rewritten = len(shape) > 3 and all(d == 1 for d in shape[:-1])
    # The rewrite is a batch matmul: a dot_general with a batch dimension.
    assert ("([0], [0]))" in text) == rewritten, text


def test_litert_tracing_swaps_gelu_and_puts_it_back_even_after_an_error():
    original = nn.gelu
    with pytest.raises(RuntimeError, match="boom"):
        with litert_rewrites.litert_tracing(gelu_as_composite=True):
            assert nn.gelu is litert_rewrites.gelu_composite
            raise RuntimeError("boom")
    assert nn.gelu is original
    with litert_rewrites.litert_tracing(gelu_as_composite=False):
        assert nn.gelu is original


def test_the_gelu_composite_is_exact_gelu_and_named_for_the_converter():
    x = jnp.linspace(-4, 4, 17)
    np.testing.assert_allclose(
        litert_rewrites.gelu_composite(x), nn.gelu(x, approximate=False), atol=1e-7
    )
    text = jax.jit(litert_rewrites.gelu_composite).lower(x).as_text()
    assert 'stablehlo.composite "tfl.gelu"' in text


@pytest.mark.slow
@pytest.mark.export
def test_a_composite_gelu_becomes_one_tflite_gelu_op():
    tf = tensorflow_or_skip()
    pytest.importorskip("ai_edge_litert")
    from jax.experimental import jax2tf

    from swin_flax.deploy import quantize
    from swin_flax.deploy.runners import load_litert  # noqa: F401  (the runtime is there)

    def forward(x):
        return nn.gelu(x * 3.0, approximate=False)

    with litert_rewrites.litert_tracing():
        function = tf.function(
            jax2tf.convert(forward, with_gradient=False),
            autograph=False,
            input_signature=[tf.TensorSpec([1, 8], tf.float32)],
        )
        concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
    quantize.configure_litert_converter(converter, "fp32", None, 1)
    content = converter.convert()
    ops = quantize.litert_op_kinds(content)["float"]
    assert ops == {"GELU": 1, "MUL": 1}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    x = np.linspace(-2, 2, 8, dtype=np.float32)[None]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, forward(x), atol=1e-5)
