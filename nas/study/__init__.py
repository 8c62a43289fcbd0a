"""Search studies: start one, run its trials, and the typed records it writes.

``start_study`` checks every input, then creates the study with its :class:`StudyConfig`;
``run_study`` runs trials (sample a spec, measure it on every agent, train it if it is feasible)
until the target of complete trials; each trial stores one :class:`TrialData`. Readers open a
study with ``open_study``. Imported on first use: ``from nas.study import TrialData`` does not load
the engine and torch.
"""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "CONFIG_ATTR": "_config", "StudyConfig": "_config", "study_config": "_config",
    "OpenedStudy": "_loader", "open_study": "_loader", "study_artifacts": "_loader",
    "SEED_MAX": "_run", "run_study": "_run", "start_study": "_run",
    "CandidateEvaluator": "_engine",
    "RECORD_ATTR": "_records", "RETRY_ATTR": "_records", "AgentMeasurement": "_records", "FormMeasurement": "_records",
    "Paired": "_records", "PairedRatio": "_records", "TrialData": "_records", "TrialRecord": "_records",
    "records": "_records",
    "MeasurementCache": "_forms", "cache_key": "_forms", "choose_form": "_forms", "device_seconds": "_forms",
    "form_measurement": "_forms", "measure_forms": "_forms", "model_facts": "_forms",
    "CALIBRATE_SECONDS": "_reference", "REFERENCE_ATTR": "_reference", "calibrated": "_reference",
    "study_references": "_reference",
    "DEFAULT_SAMPLER": "_samplers", "SAMPLERS": "_samplers", "make_sampler": "_samplers",
    "nsga2_population": "_samplers", "startup_trials": "_samplers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
