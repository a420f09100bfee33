"""The model builder: parameter counts worked out by hand, model wiring, published genotypes build."""

import numpy as np
import pytest

pytestmark = pytest.mark.keras

keras = pytest.importorskip("keras")

from nas.builder import build_models  # noqa: E402
from nas.genotype import Genotype, GenotypeError  # noqa: E402


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def cell(k, caps_in, atoms_in, caps, atoms, last):
    """First ConvCaps2D, two more in series, and the skip branch (ConvCaps2D, or ConvCaps3D in the last cell)."""
    inner = conv(k, caps * atoms, caps * atoms)
    skip = k * k * atoms * caps * atoms + caps * atoms if last else inner
    return conv(k, caps_in * atoms_in, caps * atoms) + 2 * inner + skip


def test_capsnet_parameter_count_by_hand():
    models = build_models(Genotype.preset("capsnet"))
    # [0,28,1,1,9,1,28,256,1]: 9x9 conv, 1 -> 256 channels
    # [1,28,256,1,9,2,14,32,8]: PrimaryCaps 9x9 conv, 256 -> 32 x 8 channels, stride 2: 14 x 14 grid ('same')
    # [1,14,32,8,...,10,16]: ClassCaps, an 8 x 16 matrix per (input capsule, class): 14*14*32 inputs
    by_hand = conv(9, 1, 256) + conv(9, 256, 32 * 8) + 14 * 14 * 32 * 8 * 10 * 16
    assert by_hand == 20_992 + 5_308_672 + 8_028_160 == 13_357_824
    assert models.params == by_hand
    assert models.decoder_params == (16 * 10 * 512 + 512) + (512 * 1024 + 1024) + (1024 * 784 + 784)


def test_capsnet_class_capsules_start_above_the_length_floor():
    """At initialisation the class capsules of `capsnet` must be longer than the floor sqrt(EPSILON)
    of `Length` (3.2e-4), where the margin loss barely reaches the weights. With Glorot-uniform
    convolutions they were 2e-6 long (every length at the floor); with He-normal ones 0.016."""
    from nas.datasets import load_dataset
    from nas.layers import EPSILON
    keras.utils.set_random_seed(1)
    models = build_models(Genotype.preset("capsnet"))
    images = load_dataset().x_train[:8].astype(np.float32) / 255
    lengths = keras.ops.convert_to_numpy(models.classifier(images))
    assert np.mean(lengths) > 10 * np.sqrt(EPSILON)
    assert models.classifier.get_layer("conv0").get_config()["kernel_initializer"]["class_name"] == "HeNormal"


def test_deepcaps_parameter_count_by_hand():
    genotype = Genotype.preset("deepcaps")
    models = build_models(genotype, (32, 32, 3))
    # [0,64,3,1,3,1,64,128,1]: 3x3 conv 3 -> 128 (+ batch normalisation, 4 x 128) on the x2 upsampled input
    # four CapsCells: 32x4 -> 32x4 (64->32), 32x4 -> 32x8 (32->16), 32x8 -> 32x8 (16->8), 32x8 -> 32x8 (8->4, last)
    # ClassCaps on the last cell (4*4*32 capsules) and the skip cell, position 4 (8*8*32 capsules), 8 -> 16 atoms
    by_hand = (conv(3, 3, 128) + 4 * 128 + cell(3, 32, 4, 32, 4, False) + cell(3, 32, 4, 32, 8, False)
               + cell(3, 32, 8, 32, 8, False) + cell(3, 32, 8, 32, 8, True) + (4 * 4 + 8 * 8) * 32 * 8 * 10 * 16)
    assert models.params == by_hand
    assert models.classifier.get_layer("concat_skip").output.shape[1] == (4 * 4 + 8 * 8) * 32


def test_models_share_layers_and_mask_differently():
    genotype = Genotype.from_list([[0, 28, 1, 1, 9, 2, 14, 8, 1], [1, 14, 8, 1, 3, 2, 7, 8, 5],
                                   [1, 7, 8, 5, 7, 1, 7, 10, 4], [-1], [1]])
    models = build_models(genotype)
    images = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    lengths, reconstruction = models.evaluate.predict(images, verbose=0)
    np.testing.assert_allclose(models.classifier.predict(images, verbose=0), lengths, rtol=1e-6)
    assert reconstruction.shape == (3, 28, 28, 1)
    longest = np.eye(10, dtype=np.float32)[np.argmax(lengths, axis=1)]
    train_lengths, train_reconstruction = models.train.predict([images, longest], verbose=0)
    np.testing.assert_allclose(train_lengths, lengths, rtol=1e-6)
    np.testing.assert_allclose(train_reconstruction, reconstruction, rtol=1e-5, atol=1e-6)
    other = np.roll(longest, 1, axis=1)
    assert not np.array_equal(models.train.predict([images, other], verbose=0)[1], reconstruction)


@pytest.mark.parametrize("name, input_shape", [("NASCaps-FMNIST-d96", (28, 28, 1)), ("NASCaps-MNIST-fbd", (28, 28, 1)),
                                               ("NASCaps-C10-6c2", (32, 32, 3))])
def test_published_genotypes_build(published_records, name, input_shape):
    record = next(r for r in published_records if r["name"] == name)
    models = build_models(Genotype.from_list(record["genotype"]), input_shape)
    images = np.zeros((2, *input_shape), np.float32)
    lengths, reconstruction = models.evaluate.predict(images, verbose=0)
    assert lengths.shape == (2, 10) and reconstruction.shape == (2, *input_shape)


def test_wrong_input_is_a_genotype_error():
    with pytest.raises(GenotypeError, match="data is 32 x 32 x 3") as info:
        build_models(Genotype.preset("capsnet"), (32, 32, 3))
    assert info.value.index == 0
    with pytest.raises(GenotypeError, match="100 classes"):
        build_models(Genotype.preset("capsnet"), n_classes=100)
