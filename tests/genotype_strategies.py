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
