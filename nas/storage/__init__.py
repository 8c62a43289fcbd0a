"""Where a study lives: its Optuna storage (a URL, checked before use; SQLite by default), its
folder, and its artifact store for ONNX files and weights.

Only what creates a study creates a schema (``creating_storage``, under a lock); readers open an
existing storage (``open_storage``, ``load_study``) and never create anything. Imported on first
use, so that checking a study's name (``check_study_name``) does not load Optuna and SQLAlchemy.
"""

from device_agents.lazy import lazy_face

_EXPORTS = {
    "StudyArtifacts": "_artifacts", "check_store": "_artifacts", "normalise_url": "_artifacts",
    "open_store": "_artifacts",
    "check_study_name": "_names",
    "STUDIES_DIR": "_open", "creating_storage": "_open", "default_storage": "_open", "load_study": "_open",
    "open_storage": "_open", "storage_url": "_open", "study_dir": "_open",
    "StorageError": "_url", "check_storage_url": "_url", "shown": "_url",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
