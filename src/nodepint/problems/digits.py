"""Scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), classified through a
neural ODE: a linear encoder maps the pixels to the initial state, the ODE evolves it over
[t0, t1], and a linear classifier reads the final state."""

from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from sklearn.datasets import load_digits

from nodepint.config import ConfigError
from nodepint.problems.base import Dataset, Problem, Split, split_indices


class Digits(Problem):
    name = "digits"
    task = "classification"
    input_size = 64
    output_size = 10

    def check_params(self):
        if self.cfg.n_trajectories > 1797:
            raise ConfigError(
                f"problem.n_trajectories={self.cfg.n_trajectories} is invalid: the digits "
                "data set has 1797 images."
            )

    def observation_times(self):
        return np.array([self.cfg.t1])

    def make_data(self, key):
        # load_digits reads a file shipped inside scikit-learn; it needs no network.
        images, labels = load_digits(return_X_y=True)
        subset_key, split_key, noise_key = jr.split(key, 3)
        pick = np.asarray(jr.permutation(subset_key, len(labels)))[: self.cfg.n_trajectories]
        pixels = images[pick] / 16.0
        pixels = pixels + self.cfg.noise * np.asarray(jr.normal(noise_key, pixels.shape))
        labels = labels[pick]
        train, val, test = split_indices(
            split_key, len(labels), self.cfg.val_fraction, self.cfg.test_fraction
        )

        def subset(idx):
            return Split(
                jnp.asarray(pixels[idx]), jnp.asarray(labels[idx]), jnp.ones((len(idx), 1))
            )

        return Dataset(
            subset(train),
            subset(val),
            subset(test),
            jnp.asarray(self.observation_times()),
            jnp.zeros(10),
            jnp.ones(10),
        )
