"""Control parametrisations u_phi(t), bounded by tanh squashing: u = bound * tanh(raw).

Squashing keeps every iterate of an unconstrained optimiser (Adam) inside |u| <= bound,
and unlike clipping it has a non-zero derivative everywhere, so a component pushed against
the bound can come back.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from nodepint.config import ControlConfig


class PiecewiseConstant(eqx.Module):
    """u(t) = bound * tanh(raw_k) on the k-th of K equal intervals of [t0, t1].

    NOTE: a fixed-step solver whose step ends on an interval edge evaluates its last stage
    (c = 1) with the next interval's value, so the discrete solve applies the jump up to one
    step early. DP differentiates that discrete solve exactly; DAL differentiates the
    continuous problem, so the two gradients differ by a first-order discretisation error
    for this parametrisation (the smooth `NetworkControl` has no such term).
    """

    raw: Float[Array, "intervals control"]
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __call__(self, t) -> Float[Array, " control"]:
        intervals = self.raw.shape[0]
        position = jnp.floor((t - self.t0) / (self.t1 - self.t0) * intervals)
        index = jnp.clip(position, 0, intervals - 1).astype(int)
        return self.bound * jnp.tanh(self.raw[index])

    def edges(self) -> Float[Array, " intervals-1"]:
        """Inner interval edges, where u jumps (jump times for an adaptive solver)."""
        return jnp.linspace(self.t0, self.t1, self.raw.shape[0] + 1)[1:-1]


class NetworkControl(eqx.Module):
    """u(t) = bound * tanh(MLP(s)) with s = 2 (t - t0) / (t1 - t0) - 1 in [-1, 1]."""

    mlp: eqx.nn.MLP
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __call__(self, t) -> Float[Array, " control"]:
        s = 2.0 * (t - self.t0) / (self.t1 - self.t0) - 1.0
        return self.bound * jnp.tanh(self.mlp(jnp.reshape(s, (1,))))

    def edges(self) -> None:
        return None


def make_control(
    cfg: ControlConfig,
    size: int,
    t0: float,
    t1: float,
    bound: float,
    key: PRNGKeyArray,
    dtype,
) -> PiecewiseConstant | NetworkControl:
    """Build the initial control of an optimal-control run.

    The start is small and random (scale control.init_scale), not zero: for a swing-up from
    rest the zero control is a stationary point of the cost, where every gradient is zero.
    """
    if cfg.parametrisation == "piecewise":
        raw = cfg.init_scale * jr.normal(key, (cfg.intervals, size), dtype=dtype)
        return PiecewiseConstant(raw, t0, t1, bound)
    mlp = eqx.nn.MLP(1, size, cfg.width, cfg.depth, activation=jnp.tanh, key=key)
    # Scale the last layer so that the initial |raw| is of order init_scale.
    last = mlp.layers[-1]
    mlp = eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (last.weight * cfg.init_scale, last.bias * cfg.init_scale),
    )
    mlp = jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, mlp)
    return NetworkControl(mlp, t0, t1, bound)
