"""The device speed a study's latencies are expressed at.

A device does not run at one speed: on this project's VM the host slows the vCPU two- to threefold
for tens of seconds at a time, and a phone throttles when warm. So a model measured twice, minutes
apart, can get medians 2x apart while its ratio to a fixed workload timed alongside stays within a
few per cent (``nas bench measure``). The runner times its reference workload in alternation with
every model; the study multiplies the paired ratio model / reference by the agent's calibrated
reference time, which gives the model's latency at the device's undisturbed speed whatever the
device was doing meanwhile.

The calibration is made once per agent, device fingerprint and thread count and kept under
``NAS_HOME`` (so two studies on one host agree), and copied into each study when it first runs
(so workers on other hosts, and a resumed study, use the same one). ``nas agent check --calibrate``
makes it again, on a device left idle.
"""

from __future__ import annotations

import optuna

from device_agents import Agent, AgentPool, MeasureSettings, fingerprint_key, locked_json, nas_home

REFERENCE_ATTR = "reference_ms"  # study user attr: {agent: calibrated reference ms}
CALIBRATE_SECONDS = 3.0


def _key(agent: Agent, settings: MeasureSettings) -> str:
    return f"{agent.name} {fingerprint_key(agent.fingerprint())} threads={agent.settings_for(settings).threads}"


def calibrated(agent: Agent, settings: MeasureSettings, again: bool = False) -> float:
    """The agent's reference time in ms, from ``NAS_HOME`` or (first time, or ``again``) measured now."""
    key = _key(agent, settings)
    path = nas_home() / "calibrations.json"
    if not again:
        with locked_json(path, write=False, what="the calibrations file") as known:
            if key in known:
                return known[key]
    reference_ms = agent.calibrate(settings, CALIBRATE_SECONDS)
    with locked_json(path, write=True, what="the calibrations file") as known:
        known[key] = reference_ms
    return reference_ms


def study_references(study: optuna.Study, pool: AgentPool, agents: list[str], settings: MeasureSettings
                     ) -> dict[str, float]:
    """Each agent's reference time for this study: the one stored in it, or its calibration, stored now."""
    stored = dict(study.user_attrs.get(REFERENCE_ATTR, {}))
    missing = {name: pool.call(name, lambda agent: calibrated(agent, settings))
               for name in agents if name not in stored}
    if missing:
        stored.update({name: future.result() for name, future in missing.items()})
        # another worker may have stored its own meanwhile: keep what was there first
        stored.update(study.user_attrs.get(REFERENCE_ATTR, {}))
        study.set_user_attr(REFERENCE_ATTR, stored)
    return stored
