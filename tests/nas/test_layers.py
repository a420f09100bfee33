"""Capsule layers: shapes, numerical checks against plain numpy, save/load round trip."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.keras

keras = pytest.importorskip("keras")

from nas import layers  # noqa: E402


def np_squash(v, eps=layers.EPSILON):
    norm2 = np.sum(v ** 2, axis=-1, keepdims=True)
    return norm2 / (1 + norm2) * v / np.sqrt(norm2 + eps)


def np_route(votes, routings, bias=None):
    """Procedure 1 of Sabour et al. with plain loops; votes (batch, inputs, outputs, atoms)."""
    batch, n_in, n_out, _ = votes.shape
    logits = np.zeros((batch, n_in, n_out))
    for iteration in range(routings):
        coupling = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
        outputs = np.zeros((batch, n_out, votes.shape[3]))
        for b in range(batch):
            for j in range(n_out):
                total = sum(coupling[b, i, j] * votes[b, i, j] for i in range(n_in))
                if bias is not None:
                    total = total + bias[j]
                outputs[b, j] = np_squash(total)
        if iteration < routings - 1:
            for b in range(batch):
                for i in range(n_in):
                    for j in range(n_out):
                        logits[b, i, j] += votes[b, i, j] @ outputs[b, j]
    return outputs


def test_squash_matches_numpy_and_keeps_zero_finite():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 7, 8)).astype(np.float32)
    v[0, 0] = 0.0
    out = keras.ops.convert_to_numpy(layers.squash(v))
    np.testing.assert_allclose(out, np_squash(v), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(out)) and np.all(out[0, 0] == 0)
    lengths = np.linalg.norm(out, axis=-1)
    assert np.all(lengths < 1)


def test_squash_gradient_at_zero_is_finite():
    import tensorflow as tf
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradient check written with tf.GradientTape")
    x = tf.zeros((2, 8))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layers.Length()(layers.squash(x)))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))


def test_routing_matches_numpy():
    rng = np.random.default_rng(1)
    votes = rng.normal(scale=0.5, size=(2, 6, 3, 4)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=(3, 4)).astype(np.float32)
    for routings in (1, 3):
        got = keras.ops.convert_to_numpy(layers.route(votes, routings, bias))
        np.testing.assert_allclose(got, np_route(votes.astype(np.float64), routings, bias), rtol=1e-4, atol=1e-5)


def test_routing_to_one_output_matches_numpy_without_softmax_warning():
    votes = np.random.default_rng(3).normal(scale=0.5, size=(2, 6, 1, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = keras.ops.convert_to_numpy(layers.route(votes, 3))
    np.testing.assert_allclose(got, np_route(votes.astype(np.float64), 3), rtol=1e-4, atol=1e-5)


def test_classcaps_effective_weights_do_not_depend_on_the_input_count():
    """The default raw weights times the multiplier are N(0, 0.01) for any number of inputs."""
    for inputs in (36, 1152, 6272):
        layer = layers.ClassCaps(10, 16)
        layer.build((None, inputs, 8))
        effective = keras.ops.convert_to_numpy(layer.transform) * layers.classcaps_multiplier(inputs)
        assert abs(float(np.std(effective)) - 0.01) < 0.0005


def test_classcaps_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    layer = layers.ClassCaps(4, 6, routings=3)
    out = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.transform)  # (inputs, atoms_in, capsules * atoms)
    votes = np.einsum("bni,nio->bno", x, w).reshape(2, 5, 4, 6) * layers.CLASSCAPS_REFERENCE_INPUTS / 5
    np.testing.assert_allclose(out, np_route(votes.astype(np.float64), 3), rtol=1e-4, atol=1e-5)
    assert layer.count_params() == 5 * 3 * 4 * 6


@pytest.mark.parametrize("layer, shape, expected", [
    (layers.PrimaryCaps(4, 8, 3, 2), (2, 9, 9, 16), (2, 5, 5, 4, 8)),
    (layers.ConvCaps2D(3, 5, 3, 1), (2, 7, 7, 4, 8), (2, 7, 7, 3, 5)),
    (layers.ConvCaps2D(3, 5, 5, 2), (2, 7, 7, 4, 8), (2, 4, 4, 3, 5)),
    (layers.ConvCaps3D(3, 5, 3, 2, routings=3), (2, 7, 7, 4, 8), (2, 4, 4, 3, 5)),
    (layers.CapsCell(3, 5, 3, 2), (2, 8, 8, 4, 2), (2, 4, 4, 3, 5)),
    (layers.CapsCell(3, 5, 3, 2, last=True), (2, 8, 8, 4, 2), (2, 4, 4, 3, 5)),
    (layers.ToCapsules(4, 2), (2, 3, 3, 8), (2, 3, 3, 4, 2)),
    (layers.FlatCaps(), (2, 3, 3, 4, 2), (2, 36, 2)),
    (layers.ClassCaps(10, 16), (2, 36, 8), (2, 10, 16)),
    (layers.Length(), (2, 10, 16), (2, 10)),
    (layers.Mask(), (2, 10, 16), (2, 160)),
])
def test_output_shapes(layer, shape, expected):
    out = layer(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    assert tuple(out.shape) == expected
    assert tuple(layer.compute_output_shape(shape)) == expected
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_capsule_outputs_are_squashed():
    out = keras.ops.convert_to_numpy(layers.ConvCaps3D(3, 5, 3)(np.ones((1, 4, 4, 2, 3), np.float32)))
    assert np.all(np.linalg.norm(out, axis=-1) < 1)


def test_conv_caps_weight_counts():
    layer = layers.ConvCaps2D(3, 5, 3, 1)
    layer.build((None, 7, 7, 4, 8))
    assert layer.count_params() == 3 * 3 * 4 * 8 * 3 * 5 + 3 * 5
    layer3d = layers.ConvCaps3D(3, 5, 3)
    layer3d.build((None, 7, 7, 4, 8))
    assert layer3d.count_params() == 3 * 3 * 8 * 3 * 5 + 3 * 5
    cell = layers.CapsCell(3, 5, 3, 2)
    cell.build((None, 8, 8, 4, 2))
    inner = 3 * 3 * 15 * 15 + 15
    assert cell.count_params() == (3 * 3 * 8 * 15 + 15) + 3 * inner


def test_mask_by_label_and_by_length():
    caps = np.zeros((2, 3, 2), np.float32)
    caps[0, 1] = [0.3, 0.4]
    caps[0, 2] = [0.1, 0.0]
    caps[1, 0] = [0.2, 0.0]
    by_length = keras.ops.convert_to_numpy(layers.Mask()(caps))
    np.testing.assert_allclose(by_length[0], [0, 0, 0.3, 0.4, 0, 0])
    np.testing.assert_allclose(by_length[1], [0.2, 0, 0, 0, 0, 0])
    labels = np.eye(3, dtype=np.float32)[[2, 1]]
    by_label = keras.ops.convert_to_numpy(layers.Mask()([caps, labels]))
    np.testing.assert_allclose(by_label[0], [0, 0, 0, 0, 0.1, 0])
    np.testing.assert_allclose(by_label[1], 0)


def test_margin_and_reconstruction_losses():
    lengths = np.array([[0.95, 0.05, 0.5]], np.float32)
    labels = np.array([[1, 0, 0]], np.float32)
    margin = float(keras.ops.convert_to_numpy(layers.margin_loss(labels, lengths))[0])
    assert margin == pytest.approx(0.5 * 0.4 ** 2, rel=1e-5)
    labels = np.array([[0, 0, 1]], np.float32)
    margin = float(keras.ops.convert_to_numpy(layers.margin_loss(labels, lengths))[0])
    assert margin == pytest.approx(0.4 ** 2 + 0.5 * 0.85 ** 2, rel=1e-5)
    image = np.zeros((1, 2, 2, 1), np.float32)
    recon = np.full((1, 2, 2, 1), 0.5, np.float32)
    assert float(keras.ops.convert_to_numpy(layers.reconstruction_loss(image, recon))[0]) == pytest.approx(1.0)


def test_save_load_round_trip(tmp_path):
    image = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = layers.ToCapsules(8, 2)(x)
    cell = layers.CapsCell(4, 4, 3, 2, name="cell")(x)
    last = layers.CapsCell(4, 4, 3, 2, last=True, name="last")(cell)
    flat = keras.layers.Concatenate(axis=1)([layers.FlatCaps()(cell), layers.FlatCaps()(last)])
    caps = layers.ClassCaps(10, 8)(flat)
    primary = layers.PrimaryCaps(2, 4, 3, 2)(image)
    side = layers.ClassCaps(10, 8, routings=2)(layers.FlatCaps()(layers.ConvCaps2D(2, 3, 3)(primary)))
    model = keras.Model(image, [layers.Length()(caps), layers.Mask()(caps), layers.Length()(side)])
    data = np.random.default_rng(4).random((3, 12, 12, 1)).astype(np.float32)
    before = model.predict(data, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    after = loaded.predict(data, verbose=0)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    config = loaded.get_layer("last").get_config()
    assert config["last"] is True and config["capsules"] == 4


def _mean_length(capsules):
    return float(np.linalg.norm(keras.ops.convert_to_numpy(capsules), axis=-1).mean())


def test_capsule_initializer_gives_the_stated_gain():
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    capsules = rng.normal(size=(8, 9, 9, 6, 4)).astype(np.float32)
    capsules *= 0.2 / np.linalg.norm(capsules, axis=-1, keepdims=True)  # every input length 0.2
    layer = layers.ConvCaps2D(5, 8, 3, 1)
    layer.build(capsules.shape)
    pre_squash = keras.ops.conv(keras.ops.reshape(capsules, (8, 9, 9, 24)), layer.kernel_weights, padding="valid")
    lengths = np.linalg.norm(keras.ops.convert_to_numpy(pre_squash).reshape(8, 7, 7, 5, 8), axis=-1)
    assert 0.8 * layers.SQUASH_GAIN * 0.2 < np.sqrt(np.mean(lengths ** 2)) < 1.2 * layers.SQUASH_GAIN * 0.2


def test_narrow_capsule_cells_keep_their_lengths_through_depth():
    """Three CapsCells of few narrow capsules (nine squashes deep): with Glorot initialisation the
    mean length is 9e-4 after the first cell already (and exact zeros two cells later in the search's
    networks); the capsule initializer keeps it between 0.1 and 1.5."""
    keras.utils.set_random_seed(5)
    x = np.random.default_rng(5).normal(scale=0.3, size=(4, 16, 16, 5, 1)).astype(np.float32)
    x = keras.ops.convert_to_numpy(layers.squash(x))
    for capsules, atoms in ((4, 8), (2, 7), (4, 8)):
        x = layers.CapsCell(capsules, atoms, 3, 2)(x)
        assert 0.1 < _mean_length(x) < 1.5


@pytest.mark.parametrize("make, argument", [
    (lambda: layers.ConvCaps2D(0, 8, 3), "capsules"),
    (lambda: layers.ConvCaps2D(4, 8, 3, stride=-1), "stride"),
    (lambda: layers.PrimaryCaps(4, 8.0, 3), "atoms"),
    (lambda: layers.ConvCaps3D(4, 8, 3, routings=0), "routings"),
    (lambda: layers.CapsCell(4, 8, True), "kernel"),
    (lambda: layers.CapsCell(4, 8, 3, last="yes"), "last"),
    (lambda: layers.ClassCaps(10, "16"), "atoms"),
    (lambda: layers.ToCapsules(None, 2), "capsules"),
    (lambda: layers.ClassCaps(10, 16, kernel_initializer="no_such_initializer"), "kernel_initializer"),
])
def test_bad_arguments_are_keras_style_errors(make, argument):
    with pytest.raises(ValueError, match=rf"(?s)^Layer \w+ '\w+': argument `{argument}` .*Received: {argument}="):
        make()


@pytest.mark.parametrize("layer, shape", [
    (layers.ConvCaps2D(3, 5, 3, name="cc"), (2, 7, 7, 8)),
    (layers.PrimaryCaps(3, 5, 3, name="cc"), (2, 7, 7, 4, 2)),
    (layers.ConvCaps3D(3, 5, 3, name="cc"), (2, 7, 4, 2)),
    (layers.CapsCell(3, 5, 3, name="cc"), (2, 7, 7, 8)),
    (layers.FlatCaps(name="cc"), (2, 7, 8)),
    (layers.ClassCaps(10, 16, name="cc"), (2, 7, 7, 8)),
    (layers.Length(name="cc"), (2,)),
])
def test_wrong_input_rank_names_the_layer(layer, shape):
    with pytest.raises(ValueError, match=r"layer 'cc' is incompatible with the layer: expected (min_)?ndim="):
        layer(np.zeros(shape, np.float32))


def test_inputs_that_do_not_fit_name_the_layer():
    with pytest.raises(ValueError, match=r"^Layer ToCapsules 'tc' reads 4 capsules of 2 atoms, so it needs 8 input"):
        layers.ToCapsules(4, 2, name="tc")(np.zeros((1, 3, 3, 6), np.float32))
    with pytest.raises(ValueError, match=r"^Layer ClassCaps 'cls' needs known sizes on input axes \[1, 2\]"):
        layers.ClassCaps(10, 16, name="cls")(keras.Input((None, 8)))
    with pytest.raises(ValueError, match=r"^Layer Mask 'm' takes capsules"):
        layers.Mask(name="m")([np.zeros((1, 3, 2), np.float32), np.zeros((1, 4), np.float32)])


@pytest.mark.parametrize("make, shape, weights", [
    (lambda init: layers.PrimaryCaps(2, 3, 3, kernel_initializer=init), (1, 5, 5, 4), "kernel_weights"),
    (lambda init: layers.ConvCaps2D(2, 3, 3, kernel_initializer=init), (1, 5, 5, 2, 4), "kernel_weights"),
    (lambda init: layers.ConvCaps3D(2, 3, 3, kernel_initializer=init), (1, 5, 5, 2, 4), "kernel_weights"),
    (lambda init: layers.ClassCaps(2, 3, kernel_initializer=init), (1, 6, 4), "transform"),
])
def test_kernel_initializer_is_used_and_serialised(make, shape, weights):
    layer = make(keras.initializers.Constant(0.25))
    layer.build(shape)
    assert np.all(keras.ops.convert_to_numpy(getattr(layer, weights)) == 0.25)
    config = layer.get_config()
    assert config["kernel_initializer"]["class_name"] == "Constant"
    clone = type(layer).from_config(config)
    clone.build(shape)
    assert np.all(keras.ops.convert_to_numpy(getattr(clone, weights)) == 0.25)
    default = type(layer).from_config({**config, "kernel_initializer": None})
    assert default.get_config()["kernel_initializer"] is None


def test_capscell_passes_its_kernel_initializer_to_every_inner_layer(tmp_path):
    image = keras.Input((8, 8, 2, 3))
    cell = layers.CapsCell(2, 3, 3, 2, last=True, kernel_initializer="ones", name="cell")
    model = keras.Model(image, cell(image))
    for inner in (cell.first, cell.second, cell.third, cell.skip):
        assert np.all(keras.ops.convert_to_numpy(inner.kernel_weights) == 1.0)
    model.save(tmp_path / "cell.keras")
    loaded = keras.models.load_model(tmp_path / "cell.keras")
    config = loaded.get_layer("cell").get_config()
    assert config["kernel_initializer"]["class_name"] == "Ones" and config["last"] is True
    data = np.random.default_rng(6).random((2, 8, 8, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(data, verbose=0), loaded.predict(data, verbose=0))


def test_default_capsule_kernel_has_the_stated_deviation():
    """`capsule_initializer` is Keras' VarianceScaling with SQUASH_GAIN / (coupling · sqrt(k² · capsules_in · atoms))
    as its standard deviation, for ConvCaps2D (fan-in k² · capsules_in · atoms_in) and ConvCaps3D (k² · atoms_in)."""
    keras.utils.set_random_seed(7)
    layer = layers.ConvCaps2D(6, 8, 3)
    layer.build((None, 9, 9, 5, 4))
    std = float(np.std(keras.ops.convert_to_numpy(layer.kernel_weights)))
    assert std == pytest.approx(layers.SQUASH_GAIN / np.sqrt(9 * 5 * 8), rel=0.05)
    layer3d = layers.ConvCaps3D(6, 8, 3)
    layer3d.build((None, 9, 9, 5, 4))
    std = float(np.std(keras.ops.convert_to_numpy(layer3d.kernel_weights)))
    assert std == pytest.approx(6 * layers.SQUASH_GAIN / np.sqrt(9 * 5 * 8), rel=0.05)


def _python(code: str, env: dict) -> str:
    """Run `code` in a new interpreter at the repository root with exactly `env` (plus PATH); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ.get("PATH", ""), **env},
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_layers_and_builder_leaves_the_backend_to_keras(tmp_path):
    """Importing nas.layers and nas.builder sets no KERAS_BACKEND: Keras resolves it (here from keras.json)."""
    (tmp_path / "keras.json").write_text('{"backend": "tensorflow"}')
    out = _python("import os, nas.layers, nas.builder, keras; print(os.environ.get('KERAS_BACKEND'), "
                  "keras.backend.backend())", {"KERAS_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert out.splitlines()[-1] == "None tensorflow"


@pytest.mark.parametrize("env, keras_json, expected", [
    ({}, None, "tensorflow 2"),
    ({}, '{"backend": "jax"}', "None 2"),
    ({}, '{"floatx": "float32"}', "tensorflow 2"),
    ({}, "not json", "tensorflow 2"),
    ({"KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "0"}, None, "torch 0"),
])
def test_command_line_default_backend_only_when_none_is_named(tmp_path, env, keras_json, expected):
    if keras_json is not None:
        (tmp_path / "keras.json").write_text(keras_json)
    out = _python("import os; from nas.backend import configure_environment; configure_environment(); "
                  "print(os.environ.get('KERAS_BACKEND'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))",
                  {"KERAS_HOME": str(tmp_path), "HOME": str(tmp_path), **env})
    assert out == expected
