"""``nas agent add|set|list|check|clean|remove``: register boards and phones reached over SSH as measurement agents."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import rich.markup
from rich import box
from rich.console import Console
from rich.table import Table

from device_agents import DEFAULT_CACHE_MB, DEFAULT_COMMAND_TIMEOUT, fingerprint_key
from nas.cli.options import FiniteFloatRange
from nas.errors import UserError

if TYPE_CHECKING:
    from device_agents import AgentRecord

# ``device_agents.registry`` (pydantic) is imported inside the commands, so that --help answers at once.


def _console() -> Console:
    return Console(stderr=False, highlight=False)


def _warn(message: str) -> None:
    click.secho(message, fg="yellow", bold=True, err=True)


# Options ``add`` and ``set`` share, named after the record fields they set. Their defaults are the
# registry's (``registry.register``): an option not given is left out.
_TUNING = {
    "command_timeout": click.option(
        "--timeout", "command_timeout", type=FiniteFloatRange(min=1), default=None,
        help=f"Seconds a command may run on the device once it holds the device lock (for a measurement: on "
             f"top of its own time limit) before it is killed there [default: {DEFAULT_COMMAND_TIMEOUT:g}]."),
    "down_timeout": click.option(
        "--down-timeout", type=FiniteFloatRange(min=1), default=None,
        help="Seconds to keep reconnecting to this agent before a measurement fails [default: 300]."),
    "cache_mb": click.option(
        "--cache-mb", type=FiniteFloatRange(min=1), default=None,
        help=f"Size cap of the device's model cache in MiB; the least recently used go first "
             f"[default: {DEFAULT_CACHE_MB:g}]."),
}


def _tuning_options(function: Any) -> Any:
    for option in reversed(_TUNING.values()):
        function = option(function)
    return function


def _tuning(values: dict[str, float | None]) -> dict[str, float]:
    """The record fields the tuning options given set."""
    return {field: float(values[field]) for field in _TUNING if values[field] is not None}


@click.group()
def agent() -> None:
    """Register devices (boards, phones) that measure models over SSH."""


@agent.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Host name, address, or an alias from ~/.ssh/config.")
@click.option("--port", type=int, default=None, help="SSH port (default: ~/.ssh/config, else 22).")
@click.option("--user", default=None, help="Login (default: ~/.ssh/config, else your user name).")
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    default=None,
    help="Private key file (default: ~/.ssh/config, ssh-agent, ~/.ssh/id_*).",
)
@click.option(
    "--python",
    "python",
    default="python3",
    show_default=True,
    help="Python on the device that has numpy and onnxruntime.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Intra-op threads for every measurement on this agent (default: the study's setting, 1).",
)
@click.option(
    "--workdir",
    default=".nas-agent",
    show_default=True,
    help="Work dir on the device, a folder inside the login's home (no '..'); nothing is written elsewhere.",
)
@click.option(
    "--trust-host-key",
    metavar="SHA256:...",
    default=None,
    help="Accept the device's host key if it has exactly this fingerprint.",
)
@click.option(
    "--trust-new-host-key", is_flag=True, help="Accept whatever host key the device presents (unsafe)."
)
@_tuning_options
def add(
    name: str,
    host: str,
    port: int | None,
    user: str | None,
    key: str | None,
    python: str,
    threads: int | None,
    workdir: str,
    trust_host_key: str | None,
    trust_new_host_key: bool,
    **tuning: float | None,
) -> None:
    """Connect to a device, probe it, deploy the runner, calibrate, and register it as NAME."""
    from device_agents import SSHTarget, registry
    from device_agents.hostkeys import TrustPolicy, normalize_fingerprint

    registry.check_new_name(name)  # ahead of the options' checks (register checks it again, for scripts)
    if trust_host_key and trust_new_host_key:
        raise UserError("give --trust-host-key or --trust-new-host-key, not both")
    if trust_host_key and not trust_host_key.strip().lower().startswith("sha256:"):
        raise UserError(
            f"--trust-host-key wants a SHA256 fingerprint like 'SHA256:abc...', not {trust_host_key!r}"
        )
    if key and not Path(key).expanduser().is_file():
        raise UserError(f"--key {key}: no such file")
    target = SSHTarget(
        host=host,
        port=port,
        user=user,
        key=str(Path(key).expanduser().resolve()) if key else None,
        python=python,
        workdir=workdir,
        threads=threads,
    )
    trust = TrustPolicy(
        fingerprint=normalize_fingerprint(trust_host_key) if trust_host_key else None,
        trust_new=trust_new_host_key,
        warn=_warn,
    )
    console = _console()
    record = registry.register(name, target, trust, progress=console.print, log=_warn, **_tuning(tuning))
    console.print(_fingerprint_table(name, record.address, record.fingerprint, record.dft, record.dft_error))
    if not record.dft:
        _warn(
            f"the device's onnxruntime cannot run ONNX DFT ({record.dft_error}): studies on {name} "
            "will deploy the dense form of Toeplitz-like layers"
        )
    console.print(
        f"agent [bold]{name}[/bold] registered: calibration model median "
        f"{record.calibration.median_ms:.3f} ms; use it with --agent {name}"
    )


@agent.command("set")
@click.argument("name")
@_tuning_options
def set_(name: str, **tuning: float | None) -> None:
    """Change how NAME is driven (timeouts, model cache size); the device is not contacted."""
    from device_agents import registry

    fields = _tuning(tuning)
    if not fields:
        raise UserError("nothing to set: give --timeout, --down-timeout or --cache-mb")
    if name == registry.LOCAL:
        raise UserError(f"'{registry.LOCAL}' is built in and has no settings")
    registry.get_agent(name)
    registry.update_agent(name, **fields)
    click.echo(f"agent {name}: " + ", ".join(f"{field} {value:g}" for field, value in fields.items()))


@agent.command("clean")
@click.argument("name")
def clean(name: str) -> None:
    """Remove NAME's cached models, partial uploads and runners from its work dir on the device."""
    from device_agents import registry

    if name == registry.LOCAL:
        raise UserError(f"'{registry.LOCAL}' keeps no models: it measures the files where they are")
    with registry.open_agent(name, log=_warn) as device:
        files, size = device.clean()
        where = f"{device.workdir} on {device.address}"
    click.echo(f"agent {name}: removed {files} files ({size / 2**20:.1f} MiB) from {where}")


@agent.command("list")
def list_() -> None:
    """Registered agents (and the built-in local one), as last seen; contacts no device."""
    import platform

    from device_agents import registry

    try:
        import onnxruntime

        local_ort = onnxruntime.__version__
    except ImportError:
        local_ort = "missing"
    rows = [(registry.LOCAL, "this host", platform.machine(), local_ort, "", "", "built-in")]
    for name, record in sorted(registry.list_agents().items()):
        fingerprint = record.fingerprint
        state = record.state or "?"
        style = {"ok": "green", "unreachable": "red", "error": "red", "auth": "red"}.get(state, "")
        rows.append(
            (
                name,
                record.address or record.target["host"],
                fingerprint.get("machine", "?"),
                str(fingerprint.get("onnxruntime", "?")),
                "yes" if record.dft else "no",
                _ago(record.last_seen),
                f"[{style}]{state}[/{style}]" if style else state,
            )
        )
    table = Table(title="measurement agents", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("name", "host", "arch", "onnxruntime", "DFT", "last seen", "state"):
        table.add_column(column, no_wrap=column in ("name", "arch"))
    table.columns[1].min_width = min(40, max(len(row[1]) for row in rows))
    table.columns[-1].min_width = max(len(rich.markup.render(row[-1]).plain) for row in rows)
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@agent.command("check")
@click.argument("name")
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ONNX model to measure (default: the calibration model).",
)
@click.option("--repeat", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--calibrate", is_flag=True,
              help="Measure the device's reference speed again (leave the device idle); studies started "
                   "afterwards express latency at it.")
def check(name: str, model: Path | None, repeat: int, calibrate: bool) -> None:
    """Re-probe NAME, then measure one model REPEAT times and show their spread.

    Each measurement is shown as timed and at the device's calibrated speed (the paired ratio to
    the runner's reference workload times the calibration, which is what studies record).
    """
    from device_agents import registry
    from device_agents.probe_models import probe_models
    from nas.study import calibrated, form_measurement, model_facts

    dft_model, calibration_model = probe_models()
    model = model or calibration_model
    weights, _ = model_facts(model)
    console = _console()
    record = registry.get_agent(name) if name != registry.LOCAL else None
    with registry.open_agent(name, **({"log": _warn} if record else {})) as device:
        probe = device.probe(dft_model)
        fingerprint = probe.fingerprint
        if record is not None:
            if record.fingerprint_key != fingerprint_key(fingerprint):
                _warn(
                    f"agent {name}: the device changed since it was registered "
                    f"({_changes(record.fingerprint, fingerprint)}); "
                    "measurements cached for the old fingerprint will not be reused"
                )
            registry.note_probe(name, probe)
        reference_ms = calibrated(device, registry.CALIBRATION_SETTINGS, again=calibrate)
        results, figures = [], []
        table = Table(title=f"{name}: {model.name}, {repeat} measurements")
        for column in ("#", "median ms", "at calibrated speed", "device speed", "95% interval", "p90 ms",
                       "IQR/median", "calls/sample", "model peak MiB", "process peak MiB", "wall s"):
            table.add_column(column, justify="right")
        for index in range(repeat):
            started = time.monotonic()
            result = device.measure(model, replace(registry.CALIBRATION_SETTINGS, reference_ms=reference_ms))
            results.append(result)
            figures.append(form_measurement(result, reference_ms, weights))
            latency, memory = result.latency_ms, result.memory_kb
            table.add_row(
                str(index + 1),
                f"{latency.median:.4f}",
                f"{figures[-1].median_ms:.4f}",
                f"{figures[-1].device_speed:.2f}" if figures[-1].device_speed else "-",
                f"{latency.ci_low:.4f}-{latency.ci_high:.4f}",
                f"{latency.p90:.4f}",
                f"{figures[-1].spread:.1%}" + (" [yellow]unstable[/yellow]" if figures[-1].unstable else "")
                + (" [yellow]slowed[/yellow]" if figures[-1].slowed else ""),
                str(latency.number),
                f"{memory.model_peak_kb / 1024:.2f}" + (" [yellow]implausible[/yellow]" if figures[-1].implausible
                                                          else ""),
                f"{memory.after_runs.peak_kb / 1024:.1f}",
                f"{time.monotonic() - started:.2f}",
            )
    # no DFT error here: 'agent check' has always shown a DFT that does not run as "no (not checked)"
    console.print(_fingerprint_table(name, record.address if record else "this host", fingerprint,
                                     probe.dft, None))
    console.print(table)
    medians = [r.latency_ms.median for r in results]
    middle = statistics.median(medians)
    spread = (max(medians) - min(medians)) / middle if middle else 0.0
    unstable = sum(1 for figure in figures if figure.unstable)
    slowed = sum(1 for figure in figures if figure.slowed)
    noisy = spread > 0.10 or unstable or slowed
    verdict = "[green]stable[/green]" if not noisy else "[yellow]noisy[/yellow]"
    console.print(f"median of medians {middle:.4f} ms, spread (max-min)/median {spread:.1%}, "
                  f"{unstable} of {repeat} measurements unstable, {slowed} slowed: {verdict}")
    at_speed = [figure.median_ms for figure in figures]
    console.print(f"at the calibrated speed (reference workload {reference_ms:.4f} ms"
                  f"{', calibrated now' if calibrate else ''}): median {statistics.median(at_speed):.4f} ms, "
                  f"spread {(max(at_speed) - min(at_speed)) / statistics.median(at_speed):.1%}")
    if noisy:
        console.print(rich.markup.escape(_steadying_advice(fingerprint, record)))  # "[measure]" is no markup
    console.print(_memory_note(figures, weights, fingerprint))


@agent.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget agent NAME (its work dir on the device and its host key are left in place)."""
    from device_agents import registry

    if name == registry.LOCAL:
        raise UserError(f"'{registry.LOCAL}' is built in and cannot be removed")
    record = registry.remove_agent(name)
    where = record.workdir_abs or record.target.get("workdir")
    click.echo(
        f"agent {name} removed; its work dir {where} on {record.address or 'the device'} "
        "was left in place"
    )


# --- helpers --------------------------------------------------------------------------------------


def _steadying_advice(fingerprint: dict[str, Any], record: AgentRecord | None) -> str:
    """What makes this device's timings steadier, from what its fingerprint shows."""
    tips = []
    governor = fingerprint.get("governor")
    if governor and governor != "performance":
        tips.append(f"the CPU governor is '{governor}': set 'performance' (sudo cpupower frequency-set -g "
                    "performance, or echo performance into /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)")
    hot = [f"{zone} {c:.0f} C" for zone, c in (fingerprint.get("temperature_c") or {}).items() if c >= 70]
    if hot:
        tips.append(f"it is hot ({', '.join(hot)}): let it cool, add a heatsink or fan; it throttles")
    threads = (record.target.get("threads") if record else None) or fingerprint.get("threads") or 1
    cores = fingerprint.get("cores") or 1
    if threads >= cores:
        tips.append(f"{threads} threads on {cores} cores compete with everything else: use fewer "
                    "(--threads on 'nas agent add', [measure] threads)")
    tips.append("keep the device idle while it measures (no builds, no desktop, no other studies); "
                "pin the runner to a quiet core ([measure] pin_cpu)")
    tips.append("measure longer: [measure] min_seconds, max_rounds; the study marks measurements that stay "
                "too spread as 'unstable' and the report flags them")
    tips.append("a device that stays slower than its calibration ('slowed': throttled, or a VM whose host is busy) "
                "is waited for up to [measure] max_wait_seconds; if it was calibrated while slowed, run "
                "'nas agent check NAME --calibrate' on an idle device")
    return "To steady it:\n" + "\n".join(f"  - {tip}" for tip in tips)


def _memory_note(figures: list[Any], weights: int, fingerprint: dict[str, Any]) -> str:
    """How this device reads a model's own memory, and whether it read below the model's weights."""
    method = figures[0].memory_method if figures else "peak"
    how = ("the bytes its session holds, counted inside the emulated process (qemu's own memory moves the "
           "process figures by megabytes)" if method == "held" else "its resident peak above the process")
    note = f"model memory: {how}; the model's weights are {weights / 2**20:.2f} MiB"
    implausible = sum(1 for figure in figures if figure.implausible)
    if implausible:
        note += (f"; [yellow]{implausible} of {len(figures)} read below the weights (implausible)[/yellow]: "
                 f"studies on this device use the weights instead and flag the measurement")
    if fingerprint.get("emulator"):
        note += f" ({fingerprint['emulator']} emulation)"
    return note


def _fingerprint_table(name: str, address: str | None, fingerprint: dict[str, Any], dft: bool | None,
                       dft_error: str | None) -> Table:
    table = Table(title=f"agent {name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    mem = fingerprint.get("mem_total_kb")
    temps = fingerprint.get("temperature_c") or {}
    freqs = fingerprint.get("freq_mhz") or {}
    rows = [
        ("host", address),
        ("arch (uname -m)", fingerprint.get("machine")),
        ("CPU", fingerprint.get("cpu_model")),
        ("cores", fingerprint.get("cores")),
        ("memory", f"{mem / 1024 / 1024:.1f} GiB" if mem else "unknown"),
        ("Python", fingerprint.get("python")),
        ("onnxruntime", fingerprint.get("onnxruntime")),
        ("numpy", fingerprint.get("numpy")),
        ("ONNX DFT", "runs" if dft else f"no ({dft_error or 'not checked'})"),
        ("governor", fingerprint.get("governor") or "unreadable"),
        ("frequencies", ", ".join(f"{k} {v} MHz" for k, v in freqs.items()) or "unreadable"),
        ("temperature", ", ".join(f"{k} {v:.1f} C" for k, v in temps.items()) or "unreadable"),
    ]
    if fingerprint.get("emulator"):
        rows.append(("emulator", fingerprint["emulator"]))
    if fingerprint.get("qemu_cpu"):
        rows.append(("emulated CPU", fingerprint["qemu_cpu"]))
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    from device_agents import STABLE_FINGERPRINT_FIELDS

    diffs = [
        f"{k}: {old.get(k)} -> {new.get(k)}" for k in STABLE_FINGERPRINT_FIELDS if old.get(k) != new.get(k)
    ]
    return "; ".join(diffs) or "unknown change"


def _ago(when: float | None) -> str:
    if not when:
        return "never"
    seconds = time.time() - when
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(when))
