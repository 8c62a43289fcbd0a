"""What a study stores about itself: one typed, versioned record, beside its trials' ``TrialData``.

``nas study start`` writes a :class:`StudyConfig` into the study's ``nas.config`` user attribute
(JSON, so optuna-dashboard shows it); ``resume``, workers on other hosts, ``report`` and ``pick``
read it back through :func:`study_config`, never by key. Configs written before it had a version
(plain dicts with the same fields) read as version 1; a config of another version is refused with a
message instead of being misread.
"""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, ValidationError

from nas.errors import UserError
from nas.space import Constraints, Measure, ObjectiveLabel, SearchSpace
from nas.study._samplers import DEFAULT_SAMPLER

CONFIG_SCHEMA = 1
CONFIG_ATTR = "nas.config"


class StudyConfig(BaseModel):
    """A study's settings: its search space as validated at start, its agents and objectives, its
    budget, its sampler and where its artifacts are."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = CONFIG_SCHEMA
    space: SearchSpace | None = None
    space_path: str | None = None  # the file it was read from, for people
    agents: list[str] = []  # the first is the primary: its winning form is the trial's
    objectives: list[ObjectiveLabel] = []  # in the order of the trial values
    constraints: Constraints = Constraints()
    n_trials: int = 0  # complete trials to reach
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    artifacts: str | None = None  # a folder or s3://bucket/prefix (nas.storage.StudyArtifacts)
    artifacts_dir: str | None = None  # studies made before the artifact store: their local folder
    measure: Measure = Measure()

    @classmethod
    def create(cls, space: SearchSpace, space_path: str, agents: list[str], n_trials: int, sampler: str, seed: int,
               artifacts: str) -> StudyConfig:
        return cls(space=space, space_path=space_path, agents=agents, objectives=space.objective_labels(agents),
                   constraints=space.constraints, n_trials=n_trials, sampler=sampler, seed=seed,
                   artifacts=artifacts, measure=space.measure)

    @classmethod
    def load(cls, stored: dict[str, Any], study_name: str) -> StudyConfig:
        version = stored.get("schema_version", CONFIG_SCHEMA)
        if version != CONFIG_SCHEMA:
            raise UserError(f"study {study_name!r}: its settings have schema {version}, this version of nas reads "
                            f"{CONFIG_SCHEMA}")
        try:
            return cls.model_validate(stored)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise UserError(f"study {study_name!r}: its stored settings do not read ({where}: {error['msg']})") from exc

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(CONFIG_ATTR, self.model_dump(mode="json"))

    @property
    def search_space(self) -> SearchSpace:
        if self.space is None:
            raise UserError("the study records no search space")
        return self.space

    @property
    def artifacts_url(self) -> str:
        """Where the study's artifacts are: its ``artifacts`` URL, or the folder an older study recorded."""
        url = self.artifacts or self.artifacts_dir
        if not url:
            raise UserError("the study records no artifacts location")
        return url

    def agent(self, study_name: str, name: str | None = None) -> str:
        """``name`` if the study measured on it (default: its primary agent), else a one-line error."""
        if name is None:
            if not self.agents:
                raise UserError(f"study {study_name!r} records no agents")
            return self.agents[0]
        if name not in self.agents:
            raise UserError(f"study {study_name!r} was not measured on agent {name!r}; its agents: "
                            f"{', '.join(self.agents) or 'none'}")
        return name


def study_config(study: optuna.Study) -> StudyConfig:
    """The settings the study was started with."""
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise UserError(f"study {study.study_name!r} was not made by 'nas study start'")
    return StudyConfig.load(stored, study.study_name)
