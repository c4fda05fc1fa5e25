"""The helpers of scripts/bench.py on toy inputs: ratios, deviations, timing, Markdown."""

import importlib.util
import itertools
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up in sys.modules while it builds `Sizes`.
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


def test_speedup_is_baseline_over_time(bench):
    assert bench.speedup(3.0, 1.5) == 2.0
    assert bench.speedup(1.0, 4.0) == 0.25


def test_max_relative_deviation_toy(bench):
    reference = np.array([[1.0, -4.0], [2.0, 0.5]])
    values = reference.copy()
    values[1, 1] += 0.2
    # max |difference| = 0.2, max |reference| = 4
    assert bench.max_relative_deviation(values, reference) == pytest.approx(0.05, rel=1e-12)
    assert bench.max_relative_deviation(reference, reference) == 0.0


def test_tree_relative_deviation_all_leaves(bench):
    reference = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[10.0]])}
    tree = {"a": jnp.array([1.0, 2.5]), "b": jnp.array([[10.0]])}
    assert bench.tree_relative_deviation(tree, reference) == pytest.approx(0.05, rel=1e-12)


def test_median_seconds_drops_first_call(bench):
    # A fake clock that advances 10 s on the first call and 1, 3, 2 s on the timed ones.
    ticks = itertools.accumulate([0.0, 10.0, 0.0, 1.0, 0.0, 3.0, 0.0, 2.0])
    clock = iter(ticks).__next__
    calls = []
    median, first, times, out = bench.median_seconds(
        lambda x: calls.append(x) or jnp.asarray(x), (5.0,), 3, clock=clock
    )
    assert len(calls) == 4
    assert first == 10.0
    assert times == [1.0, 3.0, 2.0]
    assert median == 2.0
    assert float(out) == 5.0


def test_replace_section_keeps_hand_text(bench):
    text = f"# Title\n\nintro\n\n{bench.MARK_BEGIN}\nold\n{bench.MARK_END}\n\nanalysis\n"
    new = bench.replace_section(text, "new table")
    assert "old" not in new
    assert "new table" in new
    assert new.startswith("# Title\n\nintro\n\n")
    assert new.endswith("\n\nanalysis\n")


def test_replace_section_appends_without_markers(bench):
    new = bench.replace_section("# Title\n", "table")
    assert new == f"# Title\n\n{bench.MARK_BEGIN}\ntable\n{bench.MARK_END}\n"


def test_observation_indices_on_boundaries(bench):
    idx = bench.observation_indices(256, 64)
    assert len(idx) == 64
    assert idx[0] == 4
    assert idx[-1] == 256
    with pytest.raises(ValueError, match="multiple"):
        bench.observation_indices(96, 64)
