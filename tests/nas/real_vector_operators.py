"""Real-vector operators for testing `nas.nsga2.NSGA2` on box-bounded benchmark problems (ZDT,
DTLZ) against pymoo: uniform sampling, simulated binary crossover (SBX) and polynomial mutation
(Deb and Agrawal 1995; Deb and Goyal 1996), with pymoo's default parameters. The search itself
uses the genotype operators of `nas.operators`."""

import numpy as np

from nas.nsga2 import Sampler, Variation


def sbx_crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, lower: np.ndarray,
                  upper: np.ndarray, eta: float = 15.0, probability: float = 0.9,
                  variable_probability: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Simulated binary crossover of two real vectors within bounds (shape (n,) each)."""
    c1, c2 = a.astype(float).copy(), b.astype(float).copy()
    if rng.random() >= probability:
        return c1, c2
    n = len(a)
    u = rng.random(n)
    flip = rng.random(n) < 0.5
    cross = (rng.random(n) < variable_probability) & (np.abs(a - b) > 1e-14)
    if not cross.any():
        return c1, c2
    y1, y2 = np.minimum(a, b)[cross], np.maximum(a, b)[cross]
    lo, hi, u = lower[cross], upper[cross], u[cross]
    delta = y2 - y1
    power = 1.0 / (eta + 1.0)

    def spread(bound_gap: np.ndarray) -> np.ndarray:
        beta = 1.0 + 2.0 * bound_gap / delta
        alpha = 2.0 - beta ** -(eta + 1.0)
        inner = u <= 1.0 / alpha
        return np.where(inner, (u * alpha) ** power,
                        (1.0 / np.maximum(2.0 - u * alpha, 1e-300)) ** power)

    x1 = np.clip(0.5 * (y1 + y2 - spread(y1 - lo) * delta), lo, hi)
    x2 = np.clip(0.5 * (y1 + y2 + spread(hi - y2) * delta), lo, hi)
    swap = flip[cross]
    c1[cross] = np.where(swap, x2, x1)
    c2[cross] = np.where(swap, x1, x2)
    return c1, c2


def polynomial_mutation(x: np.ndarray, rng: np.random.Generator, lower: np.ndarray, upper: np.ndarray,
                        eta: float = 20.0, variable_probability: float | None = None) -> np.ndarray:
    """Polynomial mutation of a real vector within bounds (each variable with probability 1/n)."""
    y = x.astype(float).copy()
    n = len(x)
    p = 1.0 / n if variable_probability is None else variable_probability
    for i in np.flatnonzero(rng.random(n) < p):
        lo, hi = lower[i], upper[i]
        span = hi - lo
        if span <= 0:
            continue
        d1, d2 = (y[i] - lo) / span, (hi - y[i]) / span
        u = rng.random()
        power = 1.0 / (eta + 1.0)
        if u < 0.5:
            xy = 1.0 - d1
            val = 2.0 * u + (1.0 - 2.0 * u) * xy ** (eta + 1.0)
            deltaq = val ** power - 1.0
        else:
            xy = 1.0 - d2
            val = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy ** (eta + 1.0)
            deltaq = 1.0 - val ** power
        y[i] = np.clip(y[i] + deltaq * span, lo, hi)
    return y


def real_vector_operators(lower, upper) -> tuple[Sampler, Variation]:
    """Uniform sampling and SBX + polynomial mutation for box-bounded real problems."""
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)

    def sample(rng: np.random.Generator) -> np.ndarray:
        return lower + rng.random(len(lower)) * (upper - lower)

    def vary(a, b, rng: np.random.Generator):
        c1, c2 = sbx_crossover(a, b, rng, lower, upper)
        return polynomial_mutation(c1, rng, lower, upper), polynomial_mutation(c2, rng, lower, upper)

    return sample, vary
