"""Search spaces: a declarative TOML file per task, validated on load, sampled per trial.

``load_space(path)`` reads a file (or a shipped space by its bare name) into a :class:`SearchSpace`;
each problem is one :class:`SpaceError` line naming the file, the field and what is allowed.
"""

from nas.space._load import BUILTIN_DIR, load_space, resolve_space_path, space_from_dict
from nas.space._schema import (
    AGENT_METRICS,
    METRICS,
    Backbone,
    Constraints,
    DataConfig,
    LayerChoices,
    Measure,
    Objective,
    ObjectiveLabel,
    SearchSpace,
    SpaceError,
    Training,
)

__all__ = ["AGENT_METRICS", "BUILTIN_DIR", "METRICS", "Backbone", "Constraints", "DataConfig", "LayerChoices",
           "Measure", "Objective", "ObjectiveLabel", "SearchSpace", "SpaceError", "Training", "load_space",
           "resolve_space_path", "space_from_dict"]
