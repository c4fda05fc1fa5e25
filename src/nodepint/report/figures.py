"""Figures of a run. Each function takes pipeline state and returns a matplotlib Figure;
only the edge saves or logs them."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only: runs on machines without a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from nodepint.pipeline import Evaluation
from nodepint.training import EpochRecord


def trajectory_figure(ev: Evaluation) -> Figure:
    """Learned trajectories (PinT solve, dense line) against the data (points), in data units."""
    mean, std = np.asarray(ev.dataset.mean), np.asarray(ev.dataset.std)
    test = ev.dataset.test
    shown = ev.dense_outputs.shape[0]
    outputs = ev.dense_outputs.shape[-1]
    names = ev.output_names or tuple(f"y{i}" for i in range(outputs))
    fig, axes = plt.subplots(outputs, 1, figsize=(8, 2.4 * outputs), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(outputs):
        ax = axes[i, 0]
        for j in range(shown):
            color = colors[j % len(colors)]
            ax.plot(
                ev.dense_ts,
                ev.dense_outputs[j, :, i] * std[i] + mean[i],
                color=color,
                label="learned model" if j == 0 else None,
            )
            data = np.asarray(test.targets[j, :, i]) * std[i] + mean[i]
            held_out = np.asarray(test.mask[j]) > 0
            ax.plot(
                ev.ts,
                data,
                "o",
                color=color,
                markersize=3,
                alpha=0.35,
                label="data" if j == 0 else None,
            )
            if ev.problem == "lynx_hare":
                train_mask = np.asarray(ev.dataset.train.mask[0]) > 0
                ax.plot(
                    ev.ts[train_mask],
                    data[train_mask],
                    "o",
                    color="black",
                    markersize=4,
                    label="training years",
                )
                val_mask = np.asarray(ev.dataset.val.mask[0]) > 0
                ax.plot(
                    ev.ts[val_mask],
                    data[val_mask],
                    "^",
                    color="tab:green",
                    markersize=6,
                    label="validation years",
                )
                ax.plot(
                    ev.ts[held_out],
                    data[held_out],
                    "s",
                    color="red",
                    markersize=6,
                    label="test years",
                )
        ax.set_ylabel(names[i])
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("t" if ev.problem != "lynx_hare" else "t (decades since 1900)")
    fig.suptitle(f"{ev.problem}: learned model against test data")
    fig.tight_layout()
    return fig


def confusion_figure(ev: Evaluation) -> Figure:
    """Confusion matrix of the test-set predictions (classification problems)."""
    labels = np.asarray(ev.dataset.test.targets)
    predicted = np.argmax(ev.pint_outputs[:, -1, :], axis=-1)
    classes = ev.pint_outputs.shape[-1]
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{ev.problem}: test accuracy {np.mean(predicted == labels):.3f}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def loss_figure(history: list[EpochRecord]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r.epoch for r in history]
    ax.plot(epochs, [r.train_loss for r in history], label="train")
    ax.plot(epochs, [r.val_loss for r in history], label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("loss curves")
    fig.tight_layout()
    return fig


def residual_figure(ev: Evaluation) -> Figure:
    """PinT defect norm per iteration on the test set (the stopping test passes at <= 1)."""
    residuals = np.asarray(ev.stats.residuals, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    iterations = np.arange(residuals.shape[1])
    for row in residuals[:20]:
        ax.plot(iterations, row, color="tab:blue", alpha=0.3, marker=".")
    # Iterations that no solve reached are all NaN; their median is NaN and not drawn.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(np.isfinite(residuals), residuals, np.nan), axis=0)
    ax.plot(iterations, median, color="black", marker="o", label="median over test set")
    ax.axhline(1.0, color="red", linestyle="--", label="tolerance")
    ax.set_yscale("log")
    ax.set_xlabel("PinT iteration (corrections applied)")
    ax.set_ylabel("weighted defect norm")
    ax.legend()
    ax.set_title("PinT residual per iteration (test set, trained model)")
    fig.tight_layout()
    return fig


def heat_field_figure(ev: Evaluation) -> Figure:
    """Space-time images of the first test trajectory: data, learned model and their difference."""
    mean, std = np.asarray(ev.dataset.mean), np.asarray(ev.dataset.std)
    data = np.asarray(ev.dataset.test.targets[0]) * std + mean
    learned = ev.pint_outputs[0] * std + mean
    extent = (0.0, 1.0, ev.ts[0], ev.ts[-1])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    limit = np.max(np.abs(data))
    panels = (("data", data, limit), ("learned model", learned, limit))
    for ax, (title, field, lim) in zip(axes[:2], panels, strict=True):
        image = ax.imshow(
            field, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim
        )
        ax.set_title(title)
        ax.set_xlabel("x / L")
    fig.colorbar(image, ax=axes[1])
    error = learned - data
    lim = np.max(np.abs(error))
    image = axes[2].imshow(
        error, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim
    )
    axes[2].set_title("learned - data")
    axes[2].set_xlabel("x / L")
    fig.colorbar(image, ax=axes[2])
    axes[0].set_ylabel("t")
    fig.suptitle(f"{ev.problem}: first test trajectory, u(t, x)")
    fig.tight_layout()
    return fig


def control_figure(outcome) -> Figure:
    """Controlled trajectories (u* on the learned model and on the true system, u_ref on
    the true system) in data units, and the control signals, from a `ControlOutcome`."""
    outputs = outcome.true.shape[-1]
    controls = outcome.control.shape[-1]
    names = outcome.output_names or tuple(f"y{i}" for i in range(outputs))
    rows = outputs + controls
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.2 * rows), sharex=True, squeeze=False)
    for i in range(outputs):
        ax = axes[i, 0]
        ax.plot(outcome.ts, outcome.learned[:, i], label="u* on learned model", color="tab:blue")
        ax.plot(
            outcome.ts,
            outcome.true[:, i],
            label="u* on true system",
            color="tab:orange",
            linestyle="--",
        )
        ax.plot(
            outcome.ts,
            outcome.reference[:, i],
            label="u_ref on true system",
            color="gray",
            linestyle=":",
        )
        ax.set_ylabel(names[i])
    for j in range(controls):
        ax = axes[outputs + j, 0]
        ax.plot(outcome.ts, outcome.control[:, j], label="u* (learned model)", color="tab:blue")
        ax.plot(
            outcome.ts,
            outcome.reference_control[:, j],
            label="u_ref (true system)",
            color="gray",
            linestyle=":",
        )
        ax.set_ylabel(f"u{j}" if controls > 1 else "u")
        ax.legend(loc="best", fontsize=8)
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("t")
    fig.suptitle(f"{outcome.problem}: optimal control")
    fig.tight_layout()
    return fig


def particle_velocity_figure(ev: Evaluation) -> Figure:
    """True against learned particle velocities on the test set (sph).

    Left: every velocity component of every test particle and observation time (up to
    20000 points), learned against true, with the identity line. Right: mean squared
    particle speed over time of the first test trajectories.
    """
    mean, std = np.asarray(ev.dataset.mean), np.asarray(ev.dataset.std)
    true = np.asarray(ev.dataset.test.targets) * std + mean
    learned = ev.pint_outputs * std + mean
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))

    true_x, true_y = true[..., 0::2].ravel(), true[..., 1::2].ravel()
    learned_x, learned_y = learned[..., 0::2].ravel(), learned[..., 1::2].ravel()
    step = max(1, true_x.size // 10000)
    left.plot(true_x[::step], learned_x[::step], ".", markersize=2, alpha=0.4, label="u")
    left.plot(true_y[::step], learned_y[::step], ".", markersize=2, alpha=0.4, label="v")
    bound = float(np.max(np.abs(true)))
    left.plot([-bound, bound], [-bound, bound], color="black", linewidth=1, label="identity")
    left.set_xlabel("true particle velocity component")
    left.set_ylabel("learned particle velocity component")
    left.legend(loc="upper left", fontsize=8)
    left.set_title("velocities, all test particles and times")

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j in range(min(3, true.shape[0])):
        color = colors[j % len(colors)]
        right.plot(ev.ts, np.mean(true[j] ** 2, axis=-1) * 2, "o", color=color, markersize=4)
        right.plot(ev.ts, np.mean(learned[j] ** 2, axis=-1) * 2, "-", color=color)
    right.plot([], [], "o", color="gray", label="true")
    right.plot([], [], "-", color="gray", label="learned model")
    right.set_xlabel("t")
    right.set_ylabel("mean squared particle speed")
    right.legend(fontsize=8)
    right.set_title("first test trajectories")
    fig.suptitle(f"{ev.problem}: true against learned particle velocities")
    fig.tight_layout()
    return fig


# Problems whose outputs are whole fields get their own figure in place of one panel per
# output coordinate.
FIELD_FIGURES = {
    "heat": ("field", heat_field_figure),
    "sph": ("particle_velocities", particle_velocity_figure),
}


def run_figures(ev: Evaluation, history: list[EpochRecord]) -> dict[str, Figure]:
    figures = {"pint_residual": residual_figure(ev)}
    if history:
        figures["loss"] = loss_figure(history)
    if ev.task == "classification":
        figures["confusion"] = confusion_figure(ev)
    elif ev.problem in FIELD_FIGURES:
        name, make_figure = FIELD_FIGURES[ev.problem]
        figures[name] = make_figure(ev)
    else:
        figures["trajectories"] = trajectory_figure(ev)
    return figures
