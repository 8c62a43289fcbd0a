"""What a study's results are for: its Pareto set, the pick of one trial and its deployable bundle,
a trial's time per layer, and the report (``nas.results.report``). Everything reads the typed
records of ``nas.study``; nothing is re-measured except by the profiler. Imported on first use."""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "disagreement": "_pareto", "dominates": "_pareto", "is_feasible": "_pareto", "non_dominated": "_pareto",
    "pareto_front": "_pareto", "pareto_trials": "_pareto",
    "Choice": "_pick", "choose": "_pick",
    "BUNDLE_FILES": "_bundle", "check_onnx": "_bundle", "default_folder": "_bundle", "write_bundle": "_bundle",
    "load_model": "_load",
    "layer_table": "_profile", "layer_times": "_profile",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
