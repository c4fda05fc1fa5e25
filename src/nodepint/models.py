"""The model: encoder, neural vector field (the processor) and decoder, as Equinox modules."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import ModelConfig

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
}


class VectorField(eqx.Module):
    """dz/dt = f_theta(z, t, u): an MLP, optionally fed the time and a control input.

    The MLP's input is the state, then the time (when time_dependent), then the control
    u (when control_size > 0).
    """

    mlp: eqx.nn.MLP
    time_dependent: bool = eqx.field(static=True)
    # Fixed per-coordinate factor on the MLP's output, set from the typical rate of change
    # of the training data, so that the MLP itself works with outputs of order one.
    output_scale: tuple[float, ...] = eqx.field(static=True)
    # Size of the control input; 0 for uncontrolled problems.
    control_size: int = eqx.field(static=True, default=0)

    def __call__(self, t, z: Float[Array, " state"], u=None) -> Float[Array, " state"]:
        parts = [z]
        if self.time_dependent:
            parts.append(jnp.reshape(t, (1,)).astype(z.dtype))
        if self.control_size:
            if u is None:
                raise ValueError(
                    f"this vector field takes a control input of size {self.control_size}; "
                    "call it with u, or wrap it in ControlledField with a control signal."
                )
            parts.append(jnp.reshape(u, (self.control_size,)).astype(z.dtype))
        inputs = jnp.concatenate(parts) if len(parts) > 1 else z
        return self.mlp(inputs) * jnp.asarray(self.output_scale, dtype=z.dtype)


class ControlledField(eqx.Module):
    """A controlled vector field closed by a control signal: (t, z) -> f(t, z, u(t))."""

    field: VectorField
    # Any callable t -> u(t), for example a parametrisation from nodepint.control.
    control: eqx.Module

    def __call__(self, t, z):
        return self.field(t, z, self.control(t))


class SignalControl(eqx.Module):
    """The piecewise-constant control that drove one training trajectory."""

    values: Float[Array, "intervals control"]
    t0: Float[Array, ""]
    t1: Float[Array, ""]

    def __call__(self, t):
        intervals = self.values.shape[0]
        position = jnp.floor((t - self.t0) / (self.t1 - self.t0) * intervals)
        return self.values[jnp.clip(position, 0, intervals - 1).astype(int)]


def field_function(t, z, field: VectorField):
    """The processor in diffrax's f(t, y, args) form, with the module passed as `args`."""
    return field(t, z)


class Projection(eqx.Module):
    """A linear map without bias, y = M x, applied to the first `M.shape[1]` entries of x.

    With `frozen`, the matrix is held fixed: gradients stop at it, so Adam and SGD leave it
    unchanged. NOTE: optimisers with decoupled weight decay (adamw) still shrink it; use a
    weight decay of zero with a fixed reduced basis.
    """

    matrix: Float[Array, "outputs inputs"]
    frozen: bool = eqx.field(static=True)

    def __call__(self, x: Float[Array, " inputs"]) -> Float[Array, " outputs"]:
        matrix = jax.lax.stop_gradient(self.matrix) if self.frozen else self.matrix
        return matrix @ x[: matrix.shape[1]]


class Encoder(eqx.Module):
    """Map an input to the initial state: identity, linear or MLP, then zero augmentation."""

    layer: eqx.Module | None
    augment: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, " features"]) -> Float[Array, " state"]:
        z = x if self.layer is None else self.layer(x)
        return jnp.concatenate([z, jnp.zeros(self.augment, dtype=z.dtype)])


class Decoder(eqx.Module):
    """Map a state to an output: the first `outputs` coordinates, or a linear readout."""

    layer: eqx.nn.Linear | Projection | None
    outputs: int = eqx.field(static=True)

    def __call__(self, z: Float[Array, " state"]) -> Float[Array, " outputs"]:
        return z[: self.outputs] if self.layer is None else self.layer(z)


class NeuralODE(eqx.Module):
    encoder: Encoder
    field: VectorField
    decoder: Decoder
    # Controlled problems: each input row ends with its trajectory's control signal,
    # signal_intervals x control_size values. 0 for uncontrolled problems.
    signal_intervals: int = eqx.field(static=True, default=0)

    def _split(self, x):
        if not self.field.control_size:
            return x, None
        width = self.signal_intervals * self.field.control_size
        values = jnp.reshape(x[x.shape[0] - width :], (self.signal_intervals, -1))
        return x[: x.shape[0] - width], values

    def initial_state(self, x) -> Float[Array, " state"]:
        """Encode the initial state of one input row (its control signal left out)."""
        return self.encoder(self._split(x)[0])

    def dynamics(self, x, t0, t1) -> eqx.Module:
        """Return the vector field that evolves input row `x`.

        That is the field itself, or for a controlled problem the field driven by the row's
        piecewise-constant signal on [t0, t1].
        """
        _, values = self._split(x)
        if values is None:
            return self.field
        return ControlledField(self.field, SignalControl(values, t0, t1))


def build_model(
    cfg: ModelConfig,
    input_size: int,
    output_size: int,
    key: PRNGKeyArray,
    dtype,
    rate_scale: tuple[float, ...] | None = None,
    basis: tuple[Array, bool] | None = None,
    control_size: int = 0,
    signal_intervals: int = 0,
) -> NeuralODE:
    """Build the encoder, vector field and decoder for a problem's input and output sizes.

    `rate_scale` gives the typical |dy/dt| of each observed coordinate (see `rate_scale`),
    or of each basis coordinate with `encoder=projection`; augmented coordinates and the
    latent coordinates of other encoders get a factor of one. `basis` (vectors of shape
    (outputs, latent_size) with orthonormal columns, and whether they are trainable) is the
    problem's reduced basis, required by `encoder=projection`: the encoder applies V^T and
    the decoder V. A controlled problem passes its control size (the field's extra input)
    and the intervals of its training signals.
    """
    enc_key, field_key, dec_key = jr.split(key, 3)

    # -- encoder
    if cfg.encoder == "identity":
        enc_layer, encoded = None, input_size
    elif cfg.encoder == "projection":
        if basis is None:
            raise ValueError("model.encoder=projection needs the problem's reduced basis.")
        vectors, trainable = basis
        enc_layer, encoded = Projection(vectors.T, not trainable), vectors.shape[1]
    elif cfg.encoder == "linear":
        enc_layer, encoded = (
            eqx.nn.Linear(input_size, cfg.latent_size, key=enc_key),
            cfg.latent_size,
        )
    else:
        enc_layer = eqx.nn.MLP(
            input_size,
            cfg.latent_size,
            cfg.width,
            1,
            activation=ACTIVATIONS[cfg.activation],
            key=enc_key,
        )
        encoded = cfg.latent_size
    state_size = encoded + cfg.augment

    # -- vector field; its last layer starts small so that the untrained flow stays near
    # the identity map and the first PinT solves converge quickly.
    mlp = eqx.nn.MLP(
        state_size + int(cfg.time_dependent) + control_size,
        state_size,
        cfg.width,
        cfg.depth,
        activation=ACTIVATIONS[cfg.activation],
        key=field_key,
    )
    last = mlp.layers[-1]
    mlp = eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (last.weight * cfg.final_layer_scale, last.bias * cfg.final_layer_scale),
    )

    # -- decoder: identity problems read the observed coordinates back; others a linear map.
    if cfg.encoder == "identity":
        decoder = Decoder(None, output_size)
    elif cfg.encoder == "projection":
        vectors, trainable = basis
        decoder = Decoder(Projection(vectors, not trainable), output_size)
    else:
        decoder = Decoder(eqx.nn.Linear(state_size, output_size, key=dec_key), output_size)

    scale = [1.0] * state_size
    if cfg.encoder in ("identity", "projection") and rate_scale is not None:
        scale[: len(rate_scale)] = [float(s) for s in rate_scale]
    field = VectorField(mlp, cfg.time_dependent, tuple(scale), control_size)
    model = NeuralODE(Encoder(enc_layer, cfg.augment), field, decoder, signal_intervals)
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model
    )


def rate_scale(targets, mask, ts) -> tuple[float, ...] | None:
    """Root-mean-square finite-difference rate of each output coordinate of trajectory data.

    Returns None when there are fewer than two observation times. Only pairs of consecutive
    observations that are both in the mask count.
    """
    targets, mask, ts = map(np.asarray, (targets, mask, ts))
    if ts.shape[0] < 2 or targets.ndim != 3:
        return None
    rates = np.diff(targets, axis=1) / np.diff(ts)[None, :, None]
    pair = (mask[:, 1:] * mask[:, :-1])[..., None]
    if pair.sum() == 0:
        return None
    rms = np.sqrt((pair * rates**2).sum(axis=(0, 1)) / pair.sum())
    return tuple(float(max(r, 1e-3)) for r in rms)
