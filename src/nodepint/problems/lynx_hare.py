"""The Hudson's Bay Company hare and lynx pelt records, 1900-1920 (a real data set).

Source of the numbers: C. Elton and D. A. MacLulich, University of Toronto Studies,
Biological Series 43 (1937), as shipped in `data/lynx_hare.csv` (thousands of pelts).
"""

from __future__ import annotations

import csv
from importlib import resources

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from nodepint.config import ConfigError
from nodepint.problems.base import Dataset, Problem, Split

# Time is measured in decades from 1900, so the 21 yearly records span t in [0, 2].
YEARS_PER_TIME_UNIT = 10.0


def load_lynx_hare() -> tuple[np.ndarray, np.ndarray]:
    """Return (years, [hare, lynx] in thousands) from the packaged CSV file."""
    path = resources.files("nodepint.problems") / "data" / "lynx_hare.csv"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    years = np.array([float(r["year"]) for r in rows])
    values = np.array([[float(r["hare_thousands"]), float(r["lynx_thousands"])] for r in rows])
    return years, values


class LynxHare(Problem):
    """One real trajectory; single years are held out for validation and testing."""

    name = "lynx_hare"
    input_size = 2
    output_size = 2
    output_names = ("hare pelts (thousands)", "lynx pelts (thousands)")

    def check_params(self):
        years, _ = load_lynx_hare()
        held_out = round(self.cfg.val_fraction * (len(years) - 1)) + round(
            self.cfg.test_fraction * (len(years) - 1)
        )
        if held_out > len(years) - 3:
            raise ConfigError(
                f"problem.val_fraction={self.cfg.val_fraction} and problem.test_fraction="
                f"{self.cfg.test_fraction} hold out {held_out} of {len(years)} years: keep "
                "at least 3 for training."
            )

    def observation_times(self):
        years, _ = load_lynx_hare()
        return (years - years[0]) / YEARS_PER_TIME_UNIT

    def make_data(self, key):
        years, values = load_lynx_hare()
        ts = self.observation_times()
        mean, std = values.mean(axis=0), values.std(axis=0)
        normalised = jnp.asarray((values - mean) / std)
        noisy = normalised + self.cfg.noise * jr.normal(jr.fold_in(key, 1), normalised.shape)

        # The first year is the initial state, so it always belongs to the training set.
        n = len(years) - 1
        order = 1 + np.asarray(jr.permutation(key, n))
        n_val = max(1, round(self.cfg.val_fraction * n))
        n_test = max(1, round(self.cfg.test_fraction * n))
        val_idx, test_idx = order[:n_val], order[n_val : n_val + n_test]
        train_mask = np.ones(len(years))
        train_mask[np.concatenate([val_idx, test_idx])] = 0.0

        def split(mask_values):
            mask = jnp.asarray(mask_values)[None]
            return Split(noisy[None, 0], noisy[None], mask)

        def only(idx):
            mask = np.zeros(len(years))
            mask[idx] = 1.0
            return mask

        return Dataset(
            split(train_mask),
            split(only(val_idx)),
            split(only(test_idx)),
            jnp.asarray(ts),
            jnp.asarray(mean),
            jnp.asarray(std),
        )
