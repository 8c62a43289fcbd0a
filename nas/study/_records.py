"""What a trial stores, as one typed, versioned record: the contract between the study and its readers.

The study writes one :class:`TrialData` per trial into the ``record`` user attribute (JSON, so
optuna-dashboard shows it too) and rewrites it as the trial goes (after measuring, at the end, on
failure); the report, ``pick``, the progress lines and the tests read it back through
:class:`TrialRecord`, never by indexing loose attributes. A record written by another schema
version is refused with a message instead of being misread.

Constraint values are also set with ``trial.set_constraint`` (feasible when <= 0) so samplers and
``study.best_trials`` know them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, BeforeValidator, ConfigDict

from device_agents import RunnerResult
from nas.spec import ArchSpec

RECORD_SCHEMA = 1
RECORD_ATTR = "record"
RETRY_ATTR = "retry_of"  # set by ``enqueue_trial`` when a failed candidate is queued again


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_result(value: Any) -> Any:
    """Records written before the runner's result was typed stored ``{}`` for "none"."""
    return None if value == {} else value


RunnerField = Annotated[RunnerResult | None, BeforeValidator(_no_result)]


class FormMeasurement(_Model):
    """One deployed form on one agent, measured alone in a fresh runner process."""

    available: bool = True
    reason: str | None = None  # why the form is unavailable on this agent
    median_ms: float | None = None  # per call, at the device's calibrated speed (nas.study._reference) when known
    p90_ms: float | None = None
    ci_low_ms: float | None = None  # 95 % interval of the median
    ci_high_ms: float | None = None
    timed_median_ms: float | None = None  # the median as timed, at whatever speed the device ran then
    device_speed: float | None = None  # that speed: calibrated reference time / reference time meanwhile
    spread: float | None = None  # IQR / median of the last round (of the ratio to the reference when calibrated)
    unstable: bool = False  # still above the spread limit after the last round
    slowed: bool = False  # the device ran slower than its calibration for the whole wait: corrected by the ratio only
    calls_per_sample: int | None = None
    model_peak_mib: float | None = None  # the model's own memory (not the process's), at least its weights
    memory_method: str | None = None  # "peak": resident peak during load and runs; "held": bytes allocated (emulated)
    implausible: bool = False  # the device's memory figure was below the model's weights, which are used instead
    process_peak_mib: float | None = None  # the whole runner process (Python, numpy, onnxruntime): context only
    runner: RunnerField = None  # the runner's result as it came (with ``cache_key`` and ``cached``)


class PairedRatio(_Model):
    """Median over interleaved rounds of latency(a) / latency(b), with its 95 % interval."""

    a: str
    b: str
    ratio: float
    ci_low: float
    ci_high: float


class Paired(_Model):
    """The available forms measured interleaved in one process, and what was chosen from it."""

    forms: list[str]
    median_ms: dict[str, float]
    ratios: list[PairedRatio]
    tied: list[str]  # the forms within the tie margin of the fastest; the smallest file among them won
    runner: RunnerField = None


class AgentMeasurement(_Model):
    """Every form of a candidate on one agent and the form chosen there."""

    forms: dict[str, FormMeasurement]
    winner: str | None = None
    paired: Paired | None = None

    @property
    def chosen(self) -> FormMeasurement | None:
        return self.forms.get(self.winner) if self.winner else None


class TrialData(_Model):
    """Everything one trial stores (the ``record`` user attribute)."""

    schema_version: int = RECORD_SCHEMA
    spec: dict[str, Any] | None = None  # the ArchSpec, its Toeplitz-like layers in the form chosen on the first agent
    code: str | None = None  # ``T2 L16 D``
    widths: str | None = None  # ``64-256-10``
    params: int | None = None
    onnx_bytes: dict[str, int] = {}  # per deployed form
    weight_bytes: dict[str, int] = {}  # per deployed form: the ONNX initializers' bytes
    agents: dict[str, AgentMeasurement] = {}
    infeasible: list[str] = []  # one line per violated hard constraint
    trained: bool = False
    accuracy: float | None = None  # validation accuracy: what the search selects by
    test_accuracy: float | None = None  # on the dataset's test part, when it has one (reported, never selected by)
    train_seconds: float | None = None
    epochs: int | None = None
    artifacts: dict[str, Any] | None = None  # {"weights": id, "onnx": {form: id}}: Optuna artifact ids (nas.storage)
    fail_reason: str | None = None
    retryable: bool = False  # failed for a passing reason (device unreachable, runner killed on its timeout,
    # an interrupted run): ``resume`` queues it again
    retry_of: int | None = None
    repeat_of: int | None = None  # the earlier complete trial with the same parameters
    worker: str | None = None  # host:pid
    timing: dict[str, float] | None = None  # seconds per phase

    @classmethod
    def load(cls, attrs: dict[str, Any]) -> TrialData:
        """The record in a trial's user attributes (an empty one if the trial never wrote one)."""
        stored = attrs.get(RECORD_ATTR)
        if stored is None:
            return cls(retry_of=attrs.get(RETRY_ATTR))
        version = stored.get("schema_version")
        if version != RECORD_SCHEMA:
            raise ValueError(f"trial record schema {version} is not supported (expected {RECORD_SCHEMA}); "
                             "the study was written by another version of nas")
        return cls.model_validate(stored)

    def save(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(RECORD_ATTR, self.model_dump(mode="json"))


@dataclass
class TrialRecord:
    """One trial as its readers see it: Optuna's number, state and values, and its typed record."""

    number: int
    state: str
    values: list[float] | None
    data: TrialData

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        return cls(
            number=trial.number,
            state=trial.state.name,
            values=list(trial.values) if trial.values is not None else None,
            data=TrialData.load(trial.user_attrs),
        )

    @property
    def spec(self) -> ArchSpec | None:
        return ArchSpec.from_dict(self.data.spec) if self.data.spec else None

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name

    @property
    def feasible(self) -> bool:
        return self.complete and not self.data.infeasible

    def winner(self, agent: str) -> str | None:
        measured = self.data.agents.get(agent)
        return measured.winner if measured else None

    def chosen(self, agent: str) -> FormMeasurement | None:
        """The figures of the form chosen on ``agent``."""
        measured = self.data.agents.get(agent)
        return measured.chosen if measured else None

    def latency_ms(self, agent: str) -> float | None:
        chosen = self.chosen(agent)
        return chosen.median_ms if chosen else None

    def model_peak_mib(self, agent: str) -> float | None:
        chosen = self.chosen(agent)
        return chosen.model_peak_mib if chosen else None


def records(study: optuna.Study) -> list[TrialRecord]:
    return [TrialRecord.from_trial(trial) for trial in study.get_trials(deepcopy=False)]
