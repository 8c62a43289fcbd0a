"""Search spaces: a declarative TOML file per task, validated on load, sampled per trial.

A wrong field is reported in one line naming the file, the field, the bad value and what is
allowed (``SpaceError``, a ``UserError``: exit code 2, nothing else happens). Types are strict:
TOML has real booleans, integers and strings, so ``epochs = true`` or ``widths = ["64"]`` is a
mistake to report, not a value to coerce.
"""

from __future__ import annotations

from typing import Literal

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from torch import nn

from device_agents import MeasureSettings
from nas.data import Dataset, check_source, load_dataset
from nas.errors import UserError
from nas.model import TrainResult, train
from nas.spec import FORMS, ArchSpec, LayerSpec

# metric -> optimisation direction; latency and memory are measured on an agent
METRICS = {"accuracy": "maximize", "latency_ms": "minimize", "model_peak_mib": "minimize", "params": "minimize",
           "onnx_kb": "minimize"}
AGENT_METRICS = ("latency_ms", "model_peak_mib")
# A hidden layer of width w holds up to a dense w x w float32 matrix (the `dense` deployed form, the
# dense and materialised layers), and training keeps about four of them (weights, gradients, Adam's two
# moments): at 16384 that is 1 GiB each, 4 GiB in all, the most a layer may take on a 16 GiB machine.
MAX_WIDTH = 16384
SPLIT_SOURCES = ("digits", "kws", "mnist")  # the sources split here, by data.val_fraction and data.seed


class SpaceError(UserError):
    """A search-space file that does not validate."""


class _Strict(BaseModel):
    """TOML reads ``inf`` and ``nan`` as floats; no setting here means anything by them."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: str = "digits"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    _check_dataset = field_validator("dataset")(check_source)

    def load(self) -> Dataset:
        """The dataset, split as these settings say: the one way every command loads a study's data."""
        return load_dataset(self.dataset, self.val_fraction, self.seed)


class LayerChoices(_Strict):
    """What one layer may be: its kinds, the ranks of each kind, the deployed forms to try."""

    kinds: list[Literal["dense", "lowrank", "toeplitz"]] = Field(["dense", "lowrank", "toeplitz"], min_length=1)
    lowrank_ranks: list[PositiveInt] = Field([4, 8, 16], min_length=1)
    displacement_ranks: list[PositiveInt] = Field([1, 2, 4], min_length=1)
    forms: list[str] = Field(list(FORMS), min_length=1)

    @field_validator("forms")
    @classmethod
    def _known_forms(cls, forms: list[str]) -> list[str]:
        unknown = [form for form in forms if form not in FORMS]
        if unknown:
            raise ValueError(f"unknown deployed form {unknown[0]!r}; allowed: {', '.join(FORMS)}")
        return forms


class Backbone(_Strict):
    hidden_layers: list[PositiveInt] = Field([1], min_length=1, description="allowed numbers of hidden layers")
    widths: list[PositiveInt] = Field([64, 128, 256], min_length=1)

    @field_validator("widths")
    @classmethod
    def _fits_memory(cls, widths: list[int]) -> list[int]:
        too_wide = [width for width in widths if width > MAX_WIDTH]
        if too_wide:
            gib = 4 * too_wide[0] ** 2 / 2**30
            raise ValueError(f"width {too_wide[0]} is above {MAX_WIDTH}: one dense {too_wide[0]}x{too_wide[0]} "
                             f"float32 matrix is {gib:.3g} GiB and training keeps about four; allowed: "
                             f"1..{MAX_WIDTH}")
        return widths


class Training(_Strict):
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    def run(self, model: nn.Module, data: Dataset, epochs: int | None = None) -> TrainResult:
        """Train ``model`` on ``data`` with these settings (``epochs`` instead of theirs if given): how a
        trial trains its candidate and ``nas pick --retrain-epochs`` retrains it."""
        return train(model, data, epochs=epochs or self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                     learning_rate=self.learning_rate, weight_decay=self.weight_decay, seed=self.seed)


class Objective(_Strict):
    metric: Literal["accuracy", "latency_ms", "model_peak_mib", "params", "onnx_kb"]
    agent: str | None = Field(None, description="agent measuring latency/memory; default: the study's first")


class ObjectiveLabel(BaseModel):
    """An objective as a study records it: the metric, its direction, the agent it is measured on (for
    latency and memory) and its label, ``latency_ms@pi4``: the study's metric names."""

    model_config = ConfigDict(extra="forbid")

    name: str
    direction: Literal["maximize", "minimize"]
    agent: str | None = None
    label: str


class Constraints(_Strict):
    max_latency_ms: PositiveFloat | None = None
    max_model_peak_mib: PositiveFloat | None = Field(
        None, description="the model's own peak memory on each agent (not the measuring process's), MiB")
    max_params: PositiveInt | None = None


_RUNNER = MeasureSettings()  # the runner's defaults live there, once


class Measure(_Strict):
    """How candidates are measured: the runner's settings, and the tie margin of the form choice."""

    threads: PositiveInt = _RUNNER.threads
    batch: PositiveInt = _RUNNER.batch
    warmup: int = Field(_RUNNER.warmup, ge=0)
    min_runs: PositiveInt = _RUNNER.min_runs
    min_seconds: float = Field(_RUNNER.min_seconds, ge=0)
    min_sample_ms: float = Field(_RUNNER.min_sample_ms, ge=0, description="calls per sample so one lasts this long")
    max_seconds: PositiveFloat = _RUNNER.max_seconds  # the runner's own time limit; the agent's --timeout comes on top
    max_spread: PositiveFloat = _RUNNER.max_spread
    max_rounds: PositiveInt = _RUNNER.max_rounds
    pin_cpu: int | None = Field(_RUNNER.pin_cpu, ge=0)
    speed_tolerance: float = Field(_RUNNER.speed_tolerance, ge=0, description="a round run this much slower than "
                                   "the agent's calibration is set aside")
    max_wait_seconds: float = Field(_RUNNER.max_wait_seconds, ge=0, description="how long slowed rounds are set "
                                    "aside before the least slowed one is used, marked 'slowed'")
    tie_margin: float = Field(0.03, ge=0, lt=1, description="forms within this paired ratio of the fastest "
                              "tie; the smaller file wins")

    def settings(self) -> MeasureSettings:
        """The runner's settings (everything but the host-side tie margin)."""
        return MeasureSettings(**self.model_dump(exclude={"tie_margin"}))


class SearchSpace(_Strict):
    name: str
    description: str = ""
    data: DataConfig = DataConfig()
    backbone: Backbone = Backbone()
    layers: LayerChoices = LayerChoices()
    layer: list[LayerChoices] = Field([], description="per-position overrides of [layers], hidden layer 1 first")
    output: LayerChoices = LayerChoices(kinds=["dense"])
    training: Training = Training()
    objectives: list[Objective] = Field(
        [Objective(metric="accuracy"), Objective(metric="latency_ms"), Objective(metric="model_peak_mib")],
        min_length=1)
    constraints: Constraints = Constraints()
    measure: Measure = Measure()

    @model_validator(mode="after")
    def _settings_apply(self) -> SearchSpace:
        _check_split_settings(self.data)
        _check_objectives(self.objectives)
        return self

    @model_validator(mode="after")
    def _ranks_fit_widths(self) -> SearchSpace:
        """A rank above a layer's input or output width is refused: it would not be a structure at all.

        Hidden layers take and give backbone widths (the first one takes the data's features, which
        are checked when the data is loaded); the output layer takes a backbone width.
        """
        smallest = min(self.backbone.widths)
        for where, choices in [*self._hidden_choices(), ("output", self.output)]:
            for field in ("lowrank_ranks", "displacement_ranks"):
                kind = "lowrank" if field == "lowrank_ranks" else "toeplitz"
                too_big = [rank for rank in getattr(choices, field) if rank > smallest]
                if kind in choices.kinds and too_big:
                    raise ValueError(f"{where}.{field}: rank {too_big[0]} is larger than the smallest width "
                                     f"{smallest} a layer takes or gives; allowed: ranks <= {smallest}")
        if len(self.layer) > max(self.backbone.hidden_layers):
            raise ValueError(f"layer: {len(self.layer)} overrides for at most {max(self.backbone.hidden_layers)} "
                             "hidden layers")
        return self

    def check_data(self, in_features: int, num_classes: int, source: str = "<search space>") -> None:
        """Refuse ranks the data makes too large: the first layer takes ``in_features``, the output
        layer gives ``num_classes`` (SpaceError, one line)."""
        for where, choices, width, what in [(*self._hidden_choices()[0], in_features, "input features"),
                                             ("output", self.output, num_classes, "classes")]:
            for field, kind in (("lowrank_ranks", "lowrank"), ("displacement_ranks", "toeplitz")):
                too_big = [rank for rank in getattr(choices, field) if rank > width]
                if kind in choices.kinds and too_big:
                    raise SpaceError(f"{source}: {where}.{field}: rank {too_big[0]} is larger than the data's "
                                     f"{width} {what}; allowed: ranks <= {width}")

    def _hidden_choices(self) -> list[tuple[str, LayerChoices]]:
        return [("layers", self.layers)] + [(f"layer[{i}]", c) for i, c in enumerate(self.layer)]

    def choices(self, index: int) -> LayerChoices:
        """The choices for hidden layer ``index`` (0-based)."""
        return self.layer[index] if index < len(self.layer) else self.layers

    def objective_labels(self, agents: list[str]) -> list[ObjectiveLabel]:
        """Each objective with its direction, agent and label (``latency_ms@pi4``), in value order."""
        out: list[ObjectiveLabel] = []
        for objective in self.objectives:
            if objective.agent is not None and objective.agent not in agents:
                raise SpaceError(f"objective {objective.metric}: agent {objective.agent!r} is not one of the "
                                 f"study's agents ({', '.join(agents)}); add it with --agent or change the objective")
            agent = (objective.agent or agents[0]) if objective.metric in AGENT_METRICS else None
            label = f"{objective.metric}@{agent}" if agent else objective.metric
            if any(o.label == label for o in out):
                raise SpaceError(f"objectives: {label} is listed twice (an objective without agent is on the "
                                 f"study's first agent, {agents[0]})")
            out.append(ObjectiveLabel(name=objective.metric, direction=METRICS[objective.metric], agent=agent,
                                      label=label))
        return out

    def forms(self) -> list[str]:
        """Deployed forms to measure for Toeplitz-like layers (all layers in one form at a time)."""
        allowed = [c.forms for _, c in self._hidden_choices() if "toeplitz" in c.kinds]
        if "toeplitz" in self.output.kinds:
            allowed.append(self.output.forms)
        return [form for form in FORMS if any(form in forms for forms in allowed)]

    def sample(self, trial: optuna.Trial, in_features: int, num_classes: int) -> ArchSpec:
        """An architecture for this trial; parameter names are stable so studies can be resumed."""
        depth = trial.suggest_categorical("depth", self.backbone.hidden_layers)
        layers = []
        for index in range(depth):
            width = trial.suggest_categorical(f"l{index}_width", self.backbone.widths)
            layers.append(_sample_layer(trial, f"l{index}", self.choices(index), width))
        layers.append(_sample_layer(trial, "out", self.output, num_classes))
        return ArchSpec(in_features=in_features, layers=tuple(layers))


def _sample_layer(trial: optuna.Trial, prefix: str, choices: LayerChoices, width: int) -> LayerSpec:
    kind = trial.suggest_categorical(f"{prefix}_kind", choices.kinds)
    if kind == "lowrank":
        return LayerSpec(kind, width, trial.suggest_categorical(f"{prefix}_rank", choices.lowrank_ranks))
    if kind == "toeplitz":
        return LayerSpec(kind, width, trial.suggest_categorical(f"{prefix}_displacement_rank",
                                                                choices.displacement_ranks))
    return LayerSpec(kind, width)


def _check_split_settings(data: DataConfig) -> None:
    """``val_fraction`` and ``seed`` split digits, KWS (by voice) and MNIST; npz and python data have X_val."""
    kind = data.dataset.partition(":")[0]
    if kind in SPLIT_SOURCES:
        return
    for field in ("val_fraction", "seed"):
        if getattr(data, field) != DataConfig.model_fields[field].default:
            raise ValueError(f"data.{field}: {kind}: datasets bring their own validation split (X_val), so "
                             f"{field} would be ignored; it applies only to {', '.join(SPLIT_SOURCES)} (remove it)")


def _check_objectives(objectives: list[Objective]) -> None:
    """Each objective once; ``agent`` only on the metrics an agent measures."""
    seen = set()
    for index, objective in enumerate(objectives):
        if objective.agent is not None and objective.metric not in AGENT_METRICS:
            raise ValueError(f"objectives.{index}.agent: {objective.metric} is not measured on an agent; "
                             f"agent applies only to {', '.join(AGENT_METRICS)}")
        key = (objective.metric, objective.agent)
        if key in seen:
            where = f" on agent {objective.agent}" if objective.agent else ""
            raise ValueError(f"objectives.{index}: {objective.metric}{where} is listed twice")
        seen.add(key)


