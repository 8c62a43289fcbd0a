"""Measure a candidate's deployed forms on agents, through the study's measurement cache.

The cache key is (model content hash, the agent's stable fingerprint, runner settings), so an
identical candidate, or the same candidate in a resumed study, is never measured twice. The cache
lives in the study's storage: every measurement is stored in its trial's ``measurements`` user
attribute as soon as it is made, and the cache is rebuilt from those on start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna

from device_agents.base import Agent, MeasureSettings, file_sha256, fingerprint_key


def cache_key(model_sha256: str, agent: Agent, settings: MeasureSettings) -> str:
    settings = agent.settings_for(settings)
    payload = json.dumps([model_sha256, fingerprint_key(agent.fingerprint()), settings.to_dict()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class MeasurementCache:
    """Measurements by cache key, filled from the study's trials and from new measurements."""

    def __init__(self, study: optuna.Study | None = None) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        for trial in study.get_trials(deepcopy=False) if study else ():
            for forms in trial.user_attrs.get("measurements", {}).values():
                for result in forms.values():
                    self._entries.setdefault(result["cache_key"], result)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def measure(self, agent: Agent, model: Path, settings: MeasureSettings) -> dict[str, Any]:
        """The cached result for this model on this agent, or a fresh measurement (then cached)."""
        key = cache_key(file_sha256(model), agent, settings)
        hit = self._entries.get(key)
        if hit is not None:
            return {**hit, "cached": True}
        result = {**agent.measure(model, settings), "cache_key": key, "cached": False}
        self._entries[key] = result
        return result


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """The figures a table needs from one runner result."""
    latency = result["latency_ms"]
    return {
        "median_ms": latency["median"],
        "p90_ms": latency["p90"],
        "peak_mb": result["memory_kb"]["after_runs"]["peak_kb"] / 1024.0,
    }
