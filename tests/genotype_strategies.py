"""Hypothesis strategies for genotypes that are well formed for the cost model."""

from hypothesis import strategies as st

KERNELS = (3, 5, 9)


@st.composite
def cost_genotypes(draw, min_layers: int = 3, max_layers: int = 25):
    """A NASCaps genotype list: convolutions, then Sabour capsule layers or CapsCells, with
    consistent sizes ('same' padding: n_out = ceil(n_in / stride)) and kernels that fit their input
    (the class layer's kernel is also drawn among them or equal to its input side, as the search's)."""
    n_layers = draw(st.integers(min_layers, max_layers))
    n_conv = draw(st.integers(1, n_layers - 2))
    caps_type = draw(st.sampled_from((1, 2)))
    side = draw(st.sampled_from((28, 32, 56, 64)))
    channels, atoms = draw(st.integers(1, 4)), 1
    layers = []
    for index in range(n_layers):
        layer_type = 0 if index < n_conv else caps_type
        fitting = [k for k in KERNELS if k <= side] or [side]
        kernel = draw(st.sampled_from(fitting + [side] if index == n_layers - 1 else fitting))
        stride = draw(st.sampled_from((1, 2)))
        n_out = -(-side // stride)
        ch_out = draw(st.integers(1, 64))
        caps_out = 1 if layer_type == 0 else draw(st.integers(1, 64))
        layers.append([layer_type, side, channels, atoms, kernel, stride, n_out, ch_out, caps_out])
        side, channels, atoms = n_out, ch_out, caps_out
    return layers + [[-1], [draw(st.sampled_from((1, 2)))]]


@st.composite
def small_genotypes(draw, max_side: int = 8):
    """A small Sabour-style genotype for end-to-end RTL runs: a 4..`max_side` pixel input of one
    channel, 1 or 2 convolutions of 1..3 channels, 1 or 2 capsule layers of 1..3 capsule types of
    1..6 atoms ('same' padding, kernels 3 and 5 where they fit), and a fully connected class layer of
    1..6 classes of 1..6 atoms (so that classes and atoms exceed the 4 columns of a 4x4 array)."""
    side = draw(st.integers(4, max_side))
    n_conv, n_caps = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    channels, atoms, layers = 1, 1, []
    for index in range(n_conv + n_caps + 1):
        layer_type = 0 if index < n_conv else 1
        if index == n_conv + n_caps:
            kernel, stride, n_out, ch_out = side, 1, 1, draw(st.integers(1, 6))
        else:
            kernel = draw(st.sampled_from([k for k in (3, 5) if k <= side] or [side]))
            stride = draw(st.sampled_from((1, 2)))
            n_out, ch_out = -(-side // stride), draw(st.integers(1, 3))
        caps_out = 1 if layer_type == 0 else draw(st.integers(1, 6))
        layers.append([layer_type, side, channels, atoms, kernel, stride, n_out, ch_out, caps_out])
        side, channels, atoms = n_out, ch_out, caps_out
    return layers + [[-1], [1]]


@st.composite
def search_genotypes(draw):
    """A genotype of the search's own operators (`nas.operators`): two parents drawn by
    `random_genotype` from the quick or the paper space (`nas.cli.load_space`), crossed and mutated
    (`variation`), seeded by hypothesis; one of the two children."""
    import numpy as np
    from nas.cli import load_space
    from nas.operators import random_genotype, variation
    space = load_space(draw(st.sampled_from(("quick", "paper"))))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    children = variation(space)(random_genotype(space, rng), random_genotype(space, rng), rng)
    return children[draw(st.integers(0, 1))].to_list()
