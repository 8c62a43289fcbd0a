"""What a trial stores, and reading it back: the contract between the study, report and pick.

Everything lives in trial user attributes (so optuna-dashboard shows it too):

``spec``          the ArchSpec dict, its Toeplitz-like layers in the form that won on the first agent
``code``/``widths``  short strings for tables (``T2 L16 D``, ``64-256-10``)
``params``        parameter count of the trained model
``onnx_bytes``    {form: size of the ONNX file}
``measurements``  {agent: {form: runner result + ``cache_key`` + ``cached``}}
``winner``        {agent: the form with the lowest median latency}
``latency_ms``    {agent: median latency of the winning form}
``latency_p90_ms`` {agent: p90 latency of the winning form}
``peak_mb``       {agent: peak resident memory (VmHWM) of the winning form, MiB}
``infeasible``    [one line per violated hard constraint]; empty when feasible
``trained``       whether the candidate was trained (infeasible ones are not)
``accuracy``, ``train_seconds``, ``epochs``
``artifacts``     {"weights": id, "onnx": {form: id}}: Optuna artifact ids in the study's artifact store
                  (``nas.artifacts``; studies made before it: file names in its ``artifacts_dir``)
``fail_reason``   for failed trials: one line saying why; ``retryable`` when a device was unreachable
``retry_of``      the failed trial whose candidate this one redoes (queued by ``resume``)
``repeat_of``     the earlier complete trial with the same parameters whose results this one took
``worker``        host:pid of the process that ran the trial
``timing``        seconds per phase (sample, export, measure, train, artifacts, total, train_s, device_s)

Constraint values are also set with ``trial.set_constraint`` (feasible when <= 0) so samplers
and ``study.best_trials`` know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.spec import ArchSpec


@dataclass
class TrialRecord:
    """One trial's stored facts, read from its user attributes."""

    number: int
    state: str
    values: list[float] | None
    spec: ArchSpec | None
    attrs: dict[str, Any] = field(repr=False)

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        spec = trial.user_attrs.get("spec")
        return cls(
            number=trial.number,
            state=trial.state.name,
            values=list(trial.values) if trial.values is not None else None,
            spec=ArchSpec.from_dict(spec) if spec else None,
            attrs=dict(trial.user_attrs),
        )

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name

    @property
    def feasible(self) -> bool:
        return self.complete and not self.attrs.get("infeasible")

    def latency_ms(self, agent: str) -> float | None:
        return self.attrs.get("latency_ms", {}).get(agent)

    def peak_mb(self, agent: str) -> float | None:
        return self.attrs.get("peak_mb", {}).get(agent)


def records(study: optuna.Study) -> list[TrialRecord]:
    return [TrialRecord.from_trial(trial) for trial in study.get_trials(deepcopy=False)]
