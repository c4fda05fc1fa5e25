"""Structured configs (the schema of every Hydra group) and their validation.

The dataclasses give every key its type, so OmegaConf rejects unknown keys and values of
the wrong type while Hydra composes the config. `validate` then checks ranges and the
relations between keys, before any data is generated or any function is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

SOLVER_NAMES = (
    "euler",
    "heun",
    "midpoint",
    "ralston",
    "bosh3",
    "tsit5",
    "dopri5",
    "dopri8",
    "implicit_euler",
    "kvaerno3",
    "kvaerno5",
)
# Solvers without an embedded error estimate cannot drive an adaptive step-size controller.
SOLVERS_WITHOUT_ERROR_ESTIMATE = ("euler", "midpoint", "ralston", "implicit_euler")

METHODS = ("sequential", "jacobi", "parareal", "newton")
BASES = ("full", "diagonal", "random1d", "growing", "sensitivity", "none")
SCANS = ("sequential", "associative")
# Which bases each level-1 method accepts. `newton` needs some approximation of the chunk
# Jacobian; `jacobi` and `parareal` apply none; `sequential` iterates nothing.
ALLOWED_BASES = {
    "sequential": ("none",),
    "jacobi": ("none",),
    # With a basis, parareal corrects its coarse linearisation in that subspace
    # (Krylov-enhanced parareal).
    "parareal": BASES,
    "newton": ("full", "diagonal", "random1d", "growing", "sensitivity"),
}
ON_FAIL = ("warn", "error", "sequential")
ACTIVATIONS = ("tanh", "softplus", "relu", "gelu", "swish")
# `projection`: the problem's reduced basis (problem.params.basis) of model.latent_size
# vectors; only field problems (heat, sph) provide one.
ENCODERS = ("identity", "linear", "mlp", "projection")
OPTIMIZERS = ("adam", "adamw", "sgd", "lion")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
PRECISIONS = ("float32", "float64")
TRAINING_METHODS = ("dp", "dal")
CONTROL_METHODS = ("none", "dp", "dal")
GRADIENT_MODES = ("implicit", "unroll", "dal")
PARAMETRISATIONS = ("piecewise", "network")
AVERAGES = ("gradients", "weights")
# Bases whose directions are random, so that independent replicas differ.
REPLICA_BASES = ("random1d", "growing")


@dataclass
class ProblemConfig:
    name: str = MISSING
    t0: float = 0.0
    t1: float = 1.0
    # Observation times: n_obs equally spaced times from t0 to t1, both included.
    n_obs: int = 33
    # Trajectories generated (images used, for digits); split into train/val/test.
    n_trajectories: int = 128
    # Observation noise: standard deviation as a fraction of each coordinate's standard
    # deviation over the clean data set.
    noise: float = 0.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Tolerances of the high-accuracy reference solve that generates the data.
    reference_rtol: float = 1e-10
    reference_atol: float = 1e-10
    # Problem-specific constants (for example sigma, rho, beta for lorenz); each problem
    # checks the names it accepts.
    params: dict[str, Any] = field(default_factory=dict)
    # Shorthand for params.mu, so that `problem.mu=1000` sets van_der_pol's damping; only
    # problems with a `mu` parameter accept it.
    mu: float | None = None


@dataclass
class ModelConfig:
    name: str = "mlp"
    width: int = 64
    depth: int = 2
    activation: str = "softplus"
    time_dependent: bool = False
    # Zeros appended to the encoded state (augmented neural ODE); 0 turns it off.
    augment: int = 0
    encoder: str = "identity"
    # State size of the neural ODE when the encoder is not the identity.
    latent_size: int = 0
    # The last layer of the vector field is scaled by this factor at initialisation, so
    # that the untrained flow is close to the identity map.
    final_layer_scale: float = 0.1


@dataclass
class SolverConfig:
    solver: str = "tsit5"
    # Fixed steps over the whole time span, split evenly over the chunks.
    steps: int = 256
    adaptive: bool = False
    rtol: float = 1e-8
    atol: float = 1e-8
    # Step limit of one chunk's adaptive solve.
    max_steps: int = 4096


@dataclass
class CoarseConfig:
    solver: str = "tsit5"
    steps_per_chunk: int = 1


@dataclass
class IntegratorConfig:
    name: str = "tsit5"
    fine: SolverConfig = field(default_factory=SolverConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)


@dataclass
class PintConfig:
    name: str = MISSING
    method: str = "parareal"
    basis: str = "none"
    chunks: int = 8
    # Stopping test: the weighted RMS norm of the update, with weights 1/(atol + rtol|U|),
    # at most 1 on every chunk.
    rtol: float = 1e-10
    atol: float = 1e-10
    # Iteration limit; null means the number of chunks, after which every method is exact.
    max_iters: int | None = None
    scan: str = "sequential"
    # Start each training trajectory's solve from its shooting states of the previous step.
    warm_start: bool = True
    # Rank of the `sensitivity` basis, and the largest rank of the `growing` basis.
    max_rank: int = 2
    # The `growing` basis starts with grow_by random directions and gains grow_by more
    # every grow_every epochs, up to max_rank.
    grow_by: int = 1
    grow_every: int = 2
    # Levenberg-Marquardt-style damping: the Jacobian approximation A_n is scaled by
    # 1 / (1 + damping). 0 is plain Newton; large values approach Jacobi.
    damping: float = 0.0
    # When max_iters < chunks, a defect that grows this many iterations in a row is
    # reported as divergence and ends the solve. 0 turns the check off.
    divergence_window: int = 3
    # When a solve ends above tolerance: warn (count it), error (stop the run), or
    # sequential (solve that batch sequentially instead, and count it).
    on_fail: str = "warn"
    # Level-2 parallelism: independent replicas of the training, each with its own random
    # directions and its own batches, solved in parallel (vmapped, sharded over mesh.proj)
    # and combined as train.average sets. Needs a random basis (random1d or growing).
    replicas: int = 1


@dataclass
class ComboConfig:
    name: str = "dp"
    # Training gradient: "dp" uses train.grad (implicit or unroll); "dal" uses the
    # continuous adjoint (train.grad=dal).
    train: str = "dp"
    # Optimal control of the learned model after training: "none", "dp" or "dal".
    control: str = "none"
    # One joint DP optimisation of the weights and the control on data misfit +
    # control.joint_weight * J(u), instead of control after training (combo dp_dp).
    joint: bool = False


@dataclass
class ControlConfig:
    # "piecewise": constant on `intervals` equal intervals; "network": an MLP u_phi(t) of
    # `width` and `depth`. Both are squashed into the bound: u = bound * tanh(raw).
    parametrisation: str = "piecewise"
    intervals: int = 20
    width: int = 16
    depth: int = 2
    # Scale of the small random initial control (a zero control can be a stationary point).
    init_scale: float = 0.1
    # Adam on the control parameters: learning rate, iteration cap, and the stopping test
    # |J_k - J_{k-1}| <= tol * max(1, |J_k|).
    lr: float = 0.05
    iterations: int = 300
    tol: float = 1e-7
    # Weight w of J(u) in the joint loss of combo dp_dp: data misfit + w * J(u).
    joint_weight: float = 0.01
    # Length of the control task's time span [t0, t0 + horizon]; 0 means the problem's
    # span. A longer horizon than the training trajectories is solved with proportionally
    # more PinT chunks of the same length and fine steps.
    horizon: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    # Reverse-mode gradient of the PinT solve: "implicit" (adjoint recurrence over the
    # chunks at the converged states), "unroll" (autodiff through the iterations) or "dal"
    # (continuous adjoint ODE solved backward on every chunk in parallel).
    grad: str = "implicit"
    # Keep the parameters with the lowest validation loss for the final evaluation.
    keep_best: bool = True
    # Continue from the checkpoint in the run directory when there is one.
    resume: bool = False
    checkpoint_every: int = 1
    # Curriculum over the time span: the loss first counts observations up to
    # horizon_start of the span, and the horizon grows linearly to the whole span over the
    # first horizon_epochs epochs. 0 epochs turns it off. Helps single-trajectory fits of
    # oscillating data, where the full-span loss has poor local minima.
    horizon_start: float = 0.3
    horizon_epochs: int = 0
    # How pint.replicas > 1 are combined: "gradients" averages their gradients every step
    # (the replicas stay identical, like data parallelism over their batches); "weights"
    # lets each replica take its own steps and averages the weights every sync_every steps.
    average: str = "gradients"
    sync_every: int = 1


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    # Global gradient-norm clipping; 0 turns it off.
    clip_norm: float = 1.0


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: str = "offline"
    project: str = "nodepint"
    entity: str | None = None


@dataclass
class MeshConfig:
    name: str = "single"
    data: int = 1
    proj: int = 1
    time: int = 1
    # Start jax.distributed from the cluster environment before building the mesh.
    distributed: bool = False


@dataclass
class Config:
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    pint: PintConfig = field(default_factory=PintConfig)
    combo: ComboConfig = field(default_factory=ComboConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    seed: int = 0
    precision: str = "float64"
    # Show a progress bar during training.
    progress: bool = True


def register_configs() -> None:
    """Store the schema so that `conf/config.yaml` can list it first in its defaults."""
    ConfigStore.instance().store(name="nodepint_schema", node=Config)


class ConfigError(ValueError):
    """A configuration value that nodepint cannot run with."""


def _choice(errors: list[str], key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        errors.append(f"{key}={value!r} is invalid: allowed values are {', '.join(allowed)}.")


def _at_least(errors: list[str], key: str, value: float, minimum: float) -> None:
    if value < minimum:
        errors.append(f"{key}={value} is invalid: it must be at least {minimum}.")


def _positive(errors: list[str], key: str, value: float) -> None:
    if not value > 0:
        errors.append(f"{key}={value} is invalid: it must be greater than 0.")


def validate(cfg: DictConfig | Config) -> None:
    """Raise `ConfigError` listing every invalid value in `cfg`.

    Checks ranges, names and the relations between keys (chunk count against fine steps,
    method against basis). Problem-specific parameters are checked by the problem itself.
    """
    if isinstance(cfg, Config):
        cfg = OmegaConf.structured(cfg)
    errors: list[str] = []
    p, m, i, pint, t, o = cfg.problem, cfg.model, cfg.integrator, cfg.pint, cfg.train, cfg.optim

    # -- problem
    if not p.t1 > p.t0:
        errors.append(f"problem.t1={p.t1} is invalid: it must be greater than problem.t0={p.t0}.")
    _at_least(errors, "problem.n_obs", p.n_obs, 2)
    _at_least(errors, "problem.n_trajectories", p.n_trajectories, 3)
    _at_least(errors, "problem.noise", p.noise, 0.0)
    for key in ("val_fraction", "test_fraction"):
        value = p[key]
        if not 0.0 < value < 1.0:
            errors.append(f"problem.{key}={value} is invalid: it must lie in (0, 1).")
    if p.val_fraction + p.test_fraction >= 1.0:
        errors.append(
            f"problem.val_fraction + problem.test_fraction = {p.val_fraction + p.test_fraction} "
            "is invalid: it must be below 1 to leave training data."
        )
    _positive(errors, "problem.reference_rtol", p.reference_rtol)
    _positive(errors, "problem.reference_atol", p.reference_atol)

    # -- model
    _at_least(errors, "model.width", m.width, 1)
    _at_least(errors, "model.depth", m.depth, 1)
    _at_least(errors, "model.augment", m.augment, 0)
    _choice(errors, "model.activation", m.activation, ACTIVATIONS)
    _choice(errors, "model.encoder", m.encoder, ENCODERS)
    if m.encoder != "identity" and m.latent_size < 1:
        errors.append(
            f"model.latent_size={m.latent_size} is invalid with model.encoder={m.encoder}: "
            "set it to the state size of the neural ODE (at least 1)."
        )
    _positive(errors, "model.final_layer_scale", m.final_layer_scale)

    # -- integrators
    _choice(errors, "integrator.fine.solver", i.fine.solver, SOLVER_NAMES)
    _choice(errors, "integrator.coarse.solver", i.coarse.solver, SOLVER_NAMES)
    _at_least(errors, "integrator.fine.steps", i.fine.steps, 1)
    _at_least(errors, "integrator.coarse.steps_per_chunk", i.coarse.steps_per_chunk, 1)
    _at_least(errors, "integrator.fine.max_steps", i.fine.max_steps, 1)
    _positive(errors, "integrator.fine.rtol", i.fine.rtol)
    _positive(errors, "integrator.fine.atol", i.fine.atol)
    if i.fine.adaptive and i.fine.solver in SOLVERS_WITHOUT_ERROR_ESTIMATE:
        errors.append(
            f"integrator.fine.solver={i.fine.solver} has no error estimate, so it cannot run "
            "with integrator.fine.adaptive=true: choose heun, bosh3, tsit5, dopri5, dopri8 "
            "or kvaerno5, or set integrator.fine.adaptive=false."
        )

    # -- PinT
    _choice(errors, "pint.method", pint.method, METHODS)
    _choice(errors, "pint.basis", pint.basis, BASES)
    _choice(errors, "pint.scan", pint.scan, SCANS)
    _at_least(errors, "pint.chunks", pint.chunks, 1)
    _positive(errors, "pint.rtol", pint.rtol)
    _positive(errors, "pint.atol", pint.atol)
    if pint.max_iters is not None:
        _at_least(errors, "pint.max_iters", pint.max_iters, 1)
    _at_least(errors, "pint.max_rank", pint.max_rank, 1)
    _at_least(errors, "pint.grow_by", pint.grow_by, 1)
    _at_least(errors, "pint.grow_every", pint.grow_every, 1)
    _at_least(errors, "pint.damping", pint.damping, 0.0)
    _at_least(errors, "pint.divergence_window", pint.divergence_window, 0)
    _choice(errors, "pint.on_fail", pint.on_fail, ON_FAIL)
    if pint.method in ALLOWED_BASES and pint.basis not in ALLOWED_BASES[pint.method]:
        errors.append(
            f"pint.basis={pint.basis} is invalid with pint.method={pint.method}: allowed "
            f"bases are {', '.join(ALLOWED_BASES[pint.method])}."
        )
    if pint.scan == "associative" and pint.method != "newton":  # parareal's G is nonlinear
        errors.append(
            f"pint.scan=associative is invalid with pint.method={pint.method}: only the affine "
            "correction of newton can run as an associative scan; use pint.scan=sequential."
        )
    if pint.chunks >= 1 and i.fine.steps >= 1 and not i.fine.adaptive:
        if pint.chunks > i.fine.steps:
            errors.append(
                f"pint.chunks={pint.chunks} is invalid: it exceeds "
                f"integrator.fine.steps={i.fine.steps}, and every chunk needs at least one "
                "fine step. Lower pint.chunks or raise integrator.fine.steps."
            )
        elif i.fine.steps % pint.chunks:
            divisors = [n for n in range(1, min(i.fine.steps, 64) + 1) if i.fine.steps % n == 0]
            errors.append(
                f"pint.chunks={pint.chunks} is invalid: it must divide "
                f"integrator.fine.steps={i.fine.steps} so that every chunk takes the same "
                f"fixed steps. Valid chunk counts include {divisors}."
            )

    # -- combo, training, optimiser, logging, mesh
    _choice(errors, "combo.train", cfg.combo.train, TRAINING_METHODS)
    _choice(errors, "combo.control", cfg.combo.control, CONTROL_METHODS)
    _check_combo(errors, cfg)
    _at_least(errors, "train.epochs", t.epochs, 0)
    _at_least(errors, "train.batch_size", t.batch_size, 1)
    _at_least(errors, "train.checkpoint_every", t.checkpoint_every, 1)
    _at_least(errors, "train.horizon_epochs", t.horizon_epochs, 0)
    if not 0.0 < t.horizon_start <= 1.0:
        errors.append(f"train.horizon_start={t.horizon_start} is invalid: it must lie in (0, 1].")
    _choice(errors, "train.grad", t.grad, GRADIENT_MODES)
    _choice(errors, "optim.name", o.name, OPTIMIZERS)
    _choice(errors, "optim.schedule", o.schedule, SCHEDULES)
    _positive(errors, "optim.lr", o.lr)
    _at_least(errors, "optim.weight_decay", o.weight_decay, 0.0)
    _at_least(errors, "optim.warmup_steps", o.warmup_steps, 0)
    _at_least(errors, "optim.clip_norm", o.clip_norm, 0.0)
    _choice(errors, "logger.name", cfg.logger.name, LOGGERS)
    _choice(errors, "logger.mode", cfg.logger.mode, WANDB_MODES)
    _at_least(errors, "pint.replicas", pint.replicas, 1)
    _choice(errors, "train.average", t.average, AVERAGES)
    _at_least(errors, "train.sync_every", t.sync_every, 1)
    if pint.replicas > 1 and pint.basis not in REPLICA_BASES:
        why = (
            "builds its basis sequentially, one Krylov direction after the other"
            if pint.basis == "sensitivity"
            else "is deterministic, so every replica would repeat the same solve"
        )
        errors.append(
            f"pint.replicas={pint.replicas} is invalid with pint.basis={pint.basis}, which "
            f"{why}: set pint.replicas=1, or use pint=random1d or pint=growing."
        )
    if t.sync_every > 1 and t.average != "weights":
        errors.append(
            f"train.sync_every={t.sync_every} is invalid with train.average={t.average}: "
            "averaged gradients keep the replicas identical at every step; set "
            "train.average=weights or train.sync_every=1."
        )
    # The mesh: the batch is sharded over `data`, replicas over `proj`, chunks over `time`.
    # Whether enough devices exist is checked when the mesh is built (nodepint.mesh).
    for axis in ("data", "proj", "time"):
        _at_least(errors, f"mesh.{axis}", cfg.mesh[axis], 1)
    for axis, key, value in (
        ("time", "pint.chunks", pint.chunks),
        ("proj", "pint.replicas", pint.replicas),
        ("data", "train.batch_size", t.batch_size),
    ):
        size = cfg.mesh[axis]
        if size >= 1 and value >= 1 and value % size:
            errors.append(
                f"mesh.{axis}={size} is invalid with {key}={value}: the mesh axis must divide "
                f"{key}, which is sharded over it."
            )
    _choice(errors, "precision", cfg.precision, PRECISIONS)

    if errors:
        raise ConfigError("\n".join(errors))


def _check_combo(errors: list[str], cfg) -> None:
    combo, c = cfg.combo, cfg.control
    if combo.joint and (combo.train != "dp" or combo.control != "dp"):
        errors.append(
            f"combo.joint=true is invalid with combo.train={combo.train} and "
            f"combo.control={combo.control}: the joint optimisation is DP for both (combo=dp_dp)."
        )
    _choice(errors, "control.parametrisation", c.parametrisation, PARAMETRISATIONS)
    _at_least(errors, "control.intervals", c.intervals, 1)
    _at_least(errors, "control.width", c.width, 1)
    _at_least(errors, "control.depth", c.depth, 1)
    _at_least(errors, "control.init_scale", c.init_scale, 0.0)
    _positive(errors, "control.lr", c.lr)
    _at_least(errors, "control.iterations", c.iterations, 1)
    _at_least(errors, "control.tol", c.tol, 0.0)
    _at_least(errors, "control.joint_weight", c.joint_weight, 0.0)
    _at_least(errors, "control.horizon", c.horizon, 0.0)


def check_problem_combo(cfg: Config | DictConfig, control_size: int) -> None:
    """Raise `ConfigError` when the combo optimises a control the problem does not have."""
    if cfg.combo.control != "none" and control_size == 0:
        raise ConfigError(
            f"combo={cfg.combo.name} (combo.control={cfg.combo.control}) is invalid with "
            f"problem={cfg.problem.name}: that problem has no control input. Use combo=dp, "
            "or a controlled problem (pendulum, lotka_volterra_harvest)."
        )


def to_dataclass(cfg: DictConfig) -> Config:
    """Convert a composed config into the typed `Config` object that the pipeline takes."""
    return OmegaConf.to_object(cfg)
