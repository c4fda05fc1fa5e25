"""The FitzHugh-Nagumo neuron model, a vector field for nodepint's `custom` problem.

    v' = v - v^3 / 3 - w + I,    w' = (v + a - b w) / tau

FitzHugh (1961), Biophysical Journal 1, 445-466. With a = 0.7, b = 0.8, tau = 12.5 and
I = 0.5 the model has a stable limit cycle (periodic spiking).
"""

import jax.numpy as jnp


def fitzhugh_nagumo(t, y, args):
    a, b, tau, current = args
    v, w = y[0], y[1]
    return jnp.stack([v - v**3 / 3 - w + current, (v + a - b * w) / tau])
