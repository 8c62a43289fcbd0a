"""A study as its readers need it, from a name and a storage URL: the one way ``resume``, ``report``,
``pick`` and the profiler open a study, its settings, its space, its dataset and its artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import optuna

from nas.data import Dataset
from nas.space import SearchSpace
from nas.storage import StudyArtifacts, load_study
from nas.study._config import StudyConfig, study_config


@dataclass
class OpenedStudy:
    """An existing study and its typed settings; the space, data and artifacts are read on first use."""

    study: optuna.Study
    config: StudyConfig = field(repr=False)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def space(self) -> SearchSpace:
        return self.config.search_space

    @cached_property
    def data(self) -> Dataset:
        """The dataset the study trains on, split as its space says."""
        return self.space.data.load()

    @cached_property
    def artifacts(self) -> StudyArtifacts:
        """Its artifact store, checked to be reachable from this host."""
        return study_artifacts(self.study, self.config)

    def agent(self, name: str | None = None) -> str:
        """``name`` if the study measured on it, else its primary agent; a one-line error otherwise."""
        return self.config.agent(self.name, name)


def open_study(name: str, storage: str | None = None, heartbeat: bool = False) -> OpenedStudy:
    """The study ``name`` in ``storage`` (default: its SQLite file), with heartbeats if asked."""
    study = load_study(name, storage, heartbeat)
    return OpenedStudy(study, study_config(study))


def study_artifacts(study: optuna.Study, config: StudyConfig | None = None) -> StudyArtifacts:
    """The artifacts of a study made by ``nas study start``, wherever its settings say they are."""
    return StudyArtifacts(study, (config or study_config(study)).artifacts_url)
