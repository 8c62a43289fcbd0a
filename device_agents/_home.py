"""Where the tool keeps per-user state (agent registry, known hosts, local agent work dir)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def nas_home() -> Path:
    """``$NAS_HOME`` if set, else the user's config dir for ``nas``."""
    return Path(os.environ.get("NAS_HOME") or platformdirs.user_config_dir("nas"))
