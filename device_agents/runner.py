#!/usr/bin/env python3
"""On-device benchmark runner: one ONNX model, one fresh process, one JSON object on stdout.

This file is copied as-is to every device, so it needs only Python 3.8+, numpy and onnxruntime
(no project imports, no f-string ``=`` tricks, no ``X | Y`` types). It follows what the mature
tools do (TVM's ``min_repeat_ms``, TFLite's ``min_secs``, onnxruntime's perf test):

* a fresh process per measurement, because ``VmHWM``/``ru_maxrss`` carry over otherwise;
* warm-up runs, then timed samples until both a minimum count and a minimum duration are reached,
  repeated while the spread (IQR / median) is too wide, up to a time limit; a measurement still too
  spread after the last round is marked ``unstable``, never returned as if it were fine;
* each sample times ``number`` back-to-back calls, sized so that a sample lasts at least
  ``--min-sample-ms`` (TVM's ``number`` inside ``repeat``): a 20 µs model is not drowned in the
  timer's and Python's own overhead; figures are per call, with a 95 % interval for the median;
* ``--paired``: several models in one process, sampled in turn (A, B, A, B, ... after warm-up, the
  order rotated each round) so slow drifts of the device hit every model alike; the result holds
  each model's figures and the paired ratios with their intervals;
* a reference workload (two fixed 128 x 128 ``MatMul``s) timed in alternation with every model,
  so each result says how fast the device ran meanwhile (``reference``: its median and the paired
  ratio model / reference, which the device's own speed changes cancel out of), and
  ``--calibrate``, the device's undisturbed speed on that workload, which the host multiplies the
  ratio by to get a latency that does not depend on what the device was doing;
* ``--reference-ms`` (that calibration): a round in which the reference ran more than
  ``--speed-tolerance`` slower than calibrated is set aside while ``--max-wait-seconds`` allows,
  because a slowed device does not slow every model alike (a cache-bound model less than the
  reference) and the ratio only corrects for it approximately; a device still slowed when the
  wait is over gives its least slowed round, marked ``slowed``;
* a fixed intra-op thread count and optional CPU pinning;
* the model's own memory: the peak (``VmHWM``) is reset just before the session is created, so the
  peak after the runs minus the resident size before the session is what loading and running the
  model cost, not Python's, numpy's and onnxruntime's own footprint; the process figures are kept;
* ``--profile``: onnxruntime's profiler, node times summed per layer (the node name's first part);
* a device fingerprint with every result;
* an exclusive ``flock`` on a file in the agent's work dir, so one measurement runs at a time per
  device whatever the number of hosts or workers asking; the runner prints an ``{"event": "locked"}``
  line once it holds it, so the host starts its measurement timeout then, not while it waits;
* its own process group (``--run-id`` names it), so a host that gives up kills all of it
  (``--kill-run``) and a stopped or hung runner never takes the device lock later;
* ``--serve``: import numpy and onnxruntime once, then read one request (a JSON list of these
  arguments) per line on stdin and fork a child per request, which measures as a fresh process would
  (its own peak, reset after the fork; nothing of an earlier measurement in it) and prints its result;
  an ``{"event": "done"}`` line ends each request. Python's start and the imports, most of a short
  measurement's cost, are paid once per host connection. The children stay in the server's process
  group, so killing the server's group (``--kill-run``) stops a measurement too; a server whose
  host went away (stdin closed) kills its child and exits;
* onnxruntime's telemetry off, and the model file's mtime set on each use (the host's model cache
  evicts the least recently used).

Exit status 0 with ``"ok": true``, or 2 with ``"ok": false`` and an ``error_kind`` the host maps to a
plain message.
"""

import argparse
import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import select
import signal
import sys
import time

# The wire protocol, written here once: the host side imports these from this file.
SCHEMA = 3  # of the result line; the host refuses another
LOCKED_EVENT = "locked"  # {"event": "locked"}: the runner holds the device lock (the host's timeout starts)
DONE_EVENT = "done"  # {"event": "done", "status": S}: a served request ended, its child's exit status S
# How a model is measured: (name, type, default, help) per knob. The runner's options are made from
# this table, and so are the host's MeasureSettings (``device_agents.protocol``), so a knob's name
# and default are written once.
MEASURE_KNOBS = (
    ("threads", int, 1, "onnxruntime intra-op threads"),
    ("batch", int, 1, "batch size of the random input"),
    ("warmup", int, 5, "untimed runs before sampling"),
    ("min_runs", int, 20, "samples per round, at least"),
    ("min_seconds", float, 0.2, "seconds per round, at least"),
    ("min_sample_ms", float, 1.0, "calls per sample so that one lasts this long"),
    ("max_seconds", float, 60.0, "the measurement's own time limit"),
    ("max_spread", float, 0.25, "re-measure while IQR/median is above"),
    ("max_rounds", int, 3, "rounds at most while too spread"),
    ("pin_cpu", int, None, "run on this CPU only"),
    ("speed_tolerance", float, 0.3, "how much slower than --reference-ms a round may run and still be used"),
    ("max_wait_seconds", float, 2.0, "how long to set slowed rounds aside before using the least slowed one"),
    ("reference_ms", float, None,
     "the device's calibrated reference time (--calibrate): rounds run slower are set aside"),
)
# How the model's own memory is read (bump when it changes: cached measurements are keyed by it).
# 2: on an emulated device, the bytes the model holds (see ``_model_memory``); the resident peak elsewhere.
MEMORY_METHOD = 2


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _proc_status_kb():
    """VmHWM / VmRSS (and RssFile, Linux 4.5+) in KiB from /proc/self/status (Linux and Android)."""
    values = {}
    text = _read("/proc/self/status") or ""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssFile"):
            values[key] = int(rest.split()[0])
    if "VmHWM" not in values:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        values["VmHWM"] = peak // 1024 if sys.platform == "darwin" else peak
        values.setdefault("VmRSS", values["VmHWM"])
    status = {"peak_kb": values["VmHWM"], "rss_kb": values["VmRSS"]}
    if "RssFile" in values:
        status["file_kb"] = values["RssFile"]
    heap = _heap_kb()
    if heap is not None:
        status["heap_kb"] = heap
    return status


@functools.lru_cache(maxsize=None)
def _mallinfo2():
    """glibc's ``mallinfo2`` (2.33+), or None (musl, Android, macOS, older glibc)."""
    try:
        import ctypes

        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, ImportError):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    function.restype = MallInfo2
    return function


def _heap_kb():
    """The bytes malloc has handed out and not had back (small blocks plus mmap'd ones), in KiB.

    Counted by the C library inside the process, so an emulator's own memory is not in it; the
    model's tensors, prepacked weights and arena are (onnxruntime allocates them with malloc).
    """
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) // 1024


_ARCH_FAMILIES = (("x86", ("x86_64", "amd64", "i386", "i486", "i586", "i686")), ("arm", ("aarch64", "arm64", "arm")),
                  ("riscv", ("riscv",)), ("ppc", ("ppc",)), ("s390", ("s390",)), ("mips", ("mips",)))


def _family(machine):
    for family, prefixes in _ARCH_FAMILIES:
        if machine.lower().startswith(prefixes):
            return family
    return machine.lower()


def _emulator():
    """``"qemu-user"`` when this process runs under user-mode emulation, else None.

    qemu-user answers ``uname`` for the guest (``aarch64``) but not ``/proc/sys/kernel/arch``, which
    names the real kernel's architecture; older kernels lack that file, and then qemu's own binary
    shows among the mappings in ``/proc/self/smaps`` (qemu fakes ``/proc/self/maps`` only).
    """
    kernel = _read("/proc/sys/kernel/arch")
    if kernel:
        return "qemu-user" if _family(kernel) != _family(platform.machine()) else None
    smaps = _read("/proc/self/smaps") or ""
    maps = _read("/proc/self/maps") or ""
    return "qemu-user" if "/qemu-" in smaps and "/qemu-" not in maps else None


ARM_PARTS = {  # /proc/cpuinfo "CPU part" of ARM Ltd (implementer 0x41) cores
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2",
}


def _cpu_model():
    """x86: the model name. ARM: the core (from CPU part, the biggest one on big.LITTLE) and the
    board or SoC (Raspberry Pi's "Model", else "Hardware")."""
    text = _read("/proc/cpuinfo") or ""
    fields = {}
    parts = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        fields.setdefault(key, value)
        if key == "CPU part":
            parts.append(value.lower())
    for key in ("model name", "cpu model"):
        if fields.get(key):
            return fields[key]
    board = fields.get("Model") or fields.get("Hardware") or fields.get("Processor")
    if parts:
        names = sorted(set(ARM_PARTS.get(part, "ARM part " + part) for part in parts))
        core = "/".join(names)
        return core + (" (" + board + ")" if board else "")
    return board or platform.processor() or "unknown"


def _temperatures():
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            temps[_read(os.path.join(zone, "type")) or os.path.basename(zone)] = int(raw) / 1000.0
    return temps


def fingerprint(threads):
    """What a result depends on besides the model: the device, its state and the software."""
    freqs = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        raw = _read(path)
        if raw and raw.isdigit():
            freqs[path.split("/")[5]] = int(raw) // 1000
    info = dict(_fixed_fingerprint())
    info.update({
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "freq_mhz": freqs,
        "temperature_c": _temperatures(),
        "threads": threads,
    })
    return info


@functools.lru_cache(maxsize=None)
def _fixed_fingerprint():
    """The part that cannot change while this process lives (a server's children inherit it)."""
    meminfo = _read("/proc/meminfo") or ""
    mem_total_kb = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            mem_total_kb = int(line.split()[1])
    info = {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_kb": mem_total_kb,
        "python": platform.python_version(),
        "qemu_cpu": os.environ.get("QEMU_CPU"),
        "emulator": _emulator(),
        "runner": runner_version(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    return info


class RunnerError(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def _import_runtime():
    try:
        import numpy
    except ImportError:
        raise RunnerError("numpy_missing", f"numpy is not installed for {sys.executable}") from None
    try:
        import onnxruntime
    except ImportError:
        message = f"onnxruntime is not installed for {sys.executable}"
        raise RunnerError("onnxruntime_missing", message) from None
    if hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()
    return numpy, onnxruntime


def _no_telemetry():
    """onnxruntime's telemetry writes ~/.cache/Microsoft/... and /tmp/.ses when it is imported; nothing
    may be written outside the work dir, so turn it off before any import (1.32 reads this variable)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@functools.lru_cache(maxsize=None)
def runner_version():
    """The first 12 hex digits of this file's SHA-256: cached results are keyed by it."""
    try:
        return _sha256(os.path.abspath(__file__))[:12]
    except (OSError, NameError):
        return None


def _touch(path):
    """Mark a model as just used (the host evicts the least recently used models first)."""
    with contextlib.suppress(OSError):
        os.utime(path, None)


def _own_process_group():
    """Lead a process group of our own, so the host can kill everything this run started."""
    with contextlib.suppress(OSError):  # already a session leader (the shell exec'd us): the group is ours
        os.setsid()


def kill_run(run_id):
    """SIGKILL the runners started with ``--run-id RUN_ID`` (their whole group when they lead one)."""
    killed = []
    marker = run_id.encode()
    for entry in glob.glob("/proc/[0-9]*"):
        pid = int(os.path.basename(entry))
        if pid == os.getpid():
            continue
        try:
            with open(os.path.join(entry, "cmdline"), "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"--run-id" not in argv or marker not in argv or b"--kill-run" in argv:
            continue
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return {"killed": killed}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _session(ort, model, threads, profile=False):
    options = ort.SessionOptions()
    options.enable_profiling = bool(profile)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad model
        raise RunnerError("model_load_failed", f"onnxruntime could not load the model: {exc}") from exc


def _inputs(np, session, batch):
    feeds = {}
    rng = np.random.default_rng(0)
    for spec in session.get_inputs():
        shape = [dim if isinstance(dim, int) else batch for dim in spec.shape]
        if "float" not in spec.type:
            message = f"input {spec.name} has type {spec.type}; only float inputs"
            raise RunnerError("unsupported_input", message)
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _reset_peak():
    """Reset ``VmHWM`` to the current resident size (Linux 4.0+: ``5`` into ``clear_refs``).

    Without it the peak left by the imports can hide a small model entirely. False where the
    kernel does not allow it: the peak before the session is then the baseline instead.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# An ONNX model with one Identity node (opset 13, IR 7): loaded once before the peak is reset, so
# onnxruntime's one-time set-up (environment, kernel registries, allocators) counts as the process's.
_PRIMER = "CAc6NwoQCgF4EgF5IghJZGVudGl0eRIBcFoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="


def _prime(np, ort, threads):
    """Create and run a trivial session, so the model's own peak excludes onnxruntime's set-up
    (and the numpy functions the inputs and statistics need, which numpy sets up lazily)."""
    import base64

    np.random.default_rng(0)
    _stats(np, [1.0, 2.0, 3.0])
    try:
        session = _session(ort, base64.b64decode(_PRIMER), threads)
        session.run(None, {"x": np.zeros(1, dtype=np.float32)})
    except RunnerError:
        pass  # the figures then include the set-up, which is all that is lost


# The reference workload (opset 13, IR 7, 193 bytes): x[1, 128] -> MatMul(W) -> Relu -> MatMul(W), with
# W = 1/128 everywhere made by ConstantOfShape, so no weights travel in the file.
_REFERENCE = (
    "CAc6tgEKNgoFc2hhcGUSAXciD0NvbnN0YW50T2ZTaGFwZSoZCgV2YWx1ZSoNCAEQASIEAAAAPEIBdqABBAoRCgF4CgF3EgFoIgZNYXRN"
    "dWwKDAoBaBIBciIEUmVsdQoRCgFyCgF3EgF5IgZNYXRNdWwSCXJlZmVyZW5jZSoRCAIQBzoEgAGAAUIFc2hhcGVaFAoBeBIPCg0IARIJ"
    "CgIIAQoDCIABYhQKAXkSDwoNCAESCQoCCAEKAwiAAUIECgAQDQ=="
)


def _reference(np, ort, threads, warmup):
    """The reference workload's session and input, warmed up."""
    import base64

    session = _session(ort, base64.b64decode(_REFERENCE), threads)
    feeds = {"x": np.full((1, 128), 0.5, dtype=np.float32)}
    _warm(session, feeds, warmup)
    return session, feeds


def _model_memory(before, after_session, after_runs, reset, emulated):
    """What the model itself costs, in KiB (``model_peak_kb``) and how that was read (``method``).

    ``peak`` (a device): the peak after the runs above the process before the session, less the
    library code paged in meanwhile (``RssFile``: onnxruntime's kernels for the model's ops are
    shared, read-only pages of its library, not the model's memory; a child forked from a server
    pages in even code its parent had, since fork copies no page table of a file mapping).

    ``held`` (under qemu-user): the growth of the bytes malloc holds, at the larger of after the
    session and after the runs. There ``/proc/self/status`` is the emulator's process: its
    translation cache and its own allocations grow and shrink by megabytes while the guest loads a
    model (the resident peak read a 0.9 MiB model as 0). The heap is counted inside the guest, the
    same as on a real board, but it is what the model holds, not the transient while loading that a
    device's peak includes. Both figures are always reported (``resident_peak_kb``, ``held_kb``).
    """
    base = before["rss_kb"] if reset else before["peak_kb"]
    code = max(after_runs.get("file_kb", 0) - before.get("file_kb", 0), 0)
    resident = max(after_runs["peak_kb"] - base - code, 0)
    held = None
    if "heap_kb" in before:
        held = max(max(after_session["heap_kb"], after_runs["heap_kb"]) - before["heap_kb"], 0)
    method = "held" if emulated and held is not None else "peak"
    return {"model_peak_kb": held if method == "held" else resident, "method": method,
            "method_version": MEMORY_METHOD, "resident_peak_kb": resident, "held_kb": held, "peak_reset": reset,
            "code_kb": code}


def _median_interval(np, values):
    """A distribution-free 95 % interval for the median: the order statistics n/2 -+ 0.98 sqrt(n)."""
    ordered = np.sort(np.asarray(values))
    n = ordered.size
    half = 0.98 * n ** 0.5
    low = max(int(np.floor(n / 2.0 - half)) - 1, 0)
    high = min(int(np.ceil(n / 2.0 + half)), n - 1)
    return float(ordered[low]), float(ordered[high])


def _stats(np, samples_ms):
    values = np.asarray(samples_ms)
    q1, median, q3, p90 = np.percentile(values, [25, 50, 75, 90])
    low, high = _median_interval(np, values)
    return {
        "median": float(median),
        "p90": float(p90),
        "min": float(values.min()),
        "mean": float(values.mean()),
        "iqr": float(q3 - q1),
        "ci_low": low,
        "ci_high": high,
        "count": int(values.size),
    }


def _sample_ms(session, feeds, number, clock=time.perf_counter):
    """One timing sample: ``number`` calls back to back, milliseconds per call on ``clock``."""
    tick = clock()
    for _ in range(number):
        session.run(None, feeds)
    return (clock() - tick) * 1000.0 / number


def _paired_clock(threads):
    """The clock a paired comparison uses: this thread's CPU time when onnxruntime runs on it alone.

    With one intra-op thread the model runs on the calling thread, so its CPU time is the model's
    compute without the time the OS gave to other processes; on a busy device that noise is most of
    a wall-clock sample's spread and it does not fall evenly on the forms. With more threads the
    work is spread over onnxruntime's pool, so wall time it is.
    """
    if threads == 1 and hasattr(time, "thread_time"):
        return "thread_cpu", time.thread_time
    return "wall", time.perf_counter


def _calls_per_sample(session, feeds, min_sample_ms, tries=3):
    """TVM's ``number``: calls per sample so that one sample lasts at least ``min_sample_ms``.

    Sized from the fastest of ``tries`` single calls (after warm-up), with a 1.5x margin: a call the
    OS interrupted cannot make it too small, and a loop of calls costs no more per call than one.
    Timing trial samples of the candidate size instead cost 5-10 ms per model for the same answer.
    """
    per_call = min(_sample_ms(session, feeds, 1) for _ in range(tries))
    if per_call >= min_sample_ms:
        return 1
    return min(int(min_sample_ms * 1.5 / max(per_call, 1e-6)) + 1, 1 << 16)


def _spread(stats):
    return stats["iqr"] / stats["median"] if stats["median"] > 0 else 0.0


def _sample_rounds(np, take, count, args, spread=None, slowdown=None):
    """Sample rounds until min count and min duration; again while the spread is above the limit.

    ``take(i)`` appends the i-th round's samples (one per model) to the lists it returns; the
    spread is ``spread(samples)``, by default the largest of the lists' own. ``slowdown(samples)``
    is how much slower than calibrated the device ran in a round: a round above the tolerance is set
    aside (not counted in ``--max-rounds``) until ``--max-wait-seconds`` have passed, then the least
    slowed one is used. Returns the samples of the round used and a dict of how they were got:
    ``rounds`` run, ``timed_s``, ``unstable`` (still too spread) and ``slowed``.
    """
    spread = spread or (lambda samples: max(_spread(_stats(np, each)) for each in samples))
    slowdown = slowdown or (lambda samples: 1.0)
    started = time.perf_counter()
    deadline = started + args.max_seconds
    waited = min(started + args.max_wait_seconds, deadline)
    rounds = kept = 0
    timed = 0.0
    aside = None  # (slowdown, samples) of the least slowed round set aside
    while True:
        rounds += 1
        samples, seconds = _one_round(take, count, args, deadline)
        timed += seconds
        slow = slowdown(samples)
        slowed = slow > 1.0 + args.speed_tolerance
        if slowed:
            if aside is None or slow < aside[0]:
                aside = (slow, samples)
            if time.perf_counter() < waited:
                continue
            samples = aside[1]
        kept += 1
        unstable = spread(samples) > args.max_spread
        if not unstable or kept >= args.max_rounds or time.perf_counter() > deadline:
            return samples, {"rounds": rounds, "timed_s": timed, "unstable": unstable, "slowed": slowed}


def _one_round(take, count, args, deadline):
    """One round's samples (at least ``--min-runs``, for at least ``--min-seconds``) and its seconds."""
    samples = [[] for _ in range(count)]
    started = time.perf_counter()
    index = 0
    while index < args.min_runs or time.perf_counter() - started < args.min_seconds:
        take(index, samples)
        index += 1
        if time.perf_counter() > deadline and index >= 3:
            break
    return samples, time.perf_counter() - started


def _latency(np, samples, number, sampled):
    stats = _stats(np, samples)
    stats.update(sampled, number=number, spread=_spread(stats))
    return stats


def _ratio(np, a, b):
    """Median over pairs of sample a / sample b, with its 95 % interval."""
    paired = np.asarray(a) / np.asarray(b)
    low, high = _median_interval(np, paired)
    return {"ratio": float(np.median(paired)), "ci_low": low, "ci_high": high}


def _timed_runs(np, session, feeds, args, reference):
    """Per-call latency of one model: samples of ``number`` calls, re-measured while too spread.

    Each sample of the model is paired with one of the reference workload, the order alternating,
    so ``reference`` says how fast the device ran meanwhile: its median, and the paired ratio model /
    reference, from which the device's own speed changes cancel out.
    """
    pair = [(session, feeds), reference]
    numbers = [_calls_per_sample(each, inputs, args.min_sample_ms) for each, inputs in pair]

    def take(index, samples):
        for step in range(2):
            which = (index + step) % 2
            samples[which].append(_sample_ms(pair[which][0], pair[which][1], numbers[which]))

    def ratio_spread(samples):  # what the host uses is the ratio: its spread is the one that counts
        return _spread(_stats(np, np.asarray(samples[0]) / np.asarray(samples[1])))

    def slowdown(samples):
        return float(np.median(samples[1])) / args.reference_ms if args.reference_ms else 1.0

    samples, sampled = _sample_rounds(np, take, 2, args, ratio_spread, slowdown)
    latency = _latency(np, samples[0], numbers[0], sampled)
    latency["reference"] = dict(_ratio(np, samples[0], samples[1]), median=float(np.median(samples[1])),
                                spread=ratio_spread(samples), calibrated_ms=args.reference_ms)
    return latency


def calibrate(args):
    """The device's undisturbed speed: the fastest of the reference workload's round medians.

    Rounds of ten samples run for ``--calibrate-seconds``; a device that is busy or slowed down for
    part of that time still has rounds at its own speed, and the fastest one is kept.
    """
    np, ort = _import_runtime()
    _pin(args)
    session, feeds = _reference(np, ort, args.threads, args.warmup)
    number = _calls_per_sample(session, feeds, args.min_sample_ms)
    medians = []
    deadline = time.perf_counter() + args.calibrate_seconds
    while time.perf_counter() < deadline or len(medians) < 3:
        medians.append(float(np.median([_sample_ms(session, feeds, number) for _ in range(10)])))
    fastest = min(medians)
    return {"calibration": {"reference_ms": fastest, "rounds": len(medians), "number": number,
                            "spread": (max(medians) - fastest) / fastest}}


def _warm(session, feeds, warmup):
    try:
        for _ in range(warmup):
            session.run(None, feeds)
    except Exception as exc:
        raise RunnerError("run_failed", "onnxruntime failed running the model: " + str(exc)) from exc


def _check_models(args):
    if not args.model:
        raise RunnerError("usage", "--model is required")
    for index, model in enumerate(args.model):
        if not os.path.isfile(model):
            raise RunnerError("model_missing", "model file " + model + " is not on the device")
        _touch(model)
        expected = args.sha256[index] if args.sha256 and index < len(args.sha256) else None
        if expected and _sha256(model) != expected:
            raise RunnerError("model_corrupt", "model file " + model + " does not match its content hash")
    _pin(args)


def _pin(args):
    if args.pin_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.pin_cpu})


def measure(args):
    """One model in this fresh process: latency, session time and the model's own memory."""
    np, ort = _import_runtime()
    _check_models(args)
    baseline = _proc_status_kb()
    _prime(np, ort, args.threads)
    reference = _reference(np, ort, args.threads, args.warmup)
    reset = _reset_peak()
    before_session = _proc_status_kb()
    tick = time.perf_counter()
    session = _session(ort, args.model[0], args.threads, args.profile)
    session_ms = (time.perf_counter() - tick) * 1000.0
    after_session = _proc_status_kb()
    feeds = _inputs(np, session, args.batch)
    _warm(session, feeds, args.warmup)
    try:
        latency = _timed_runs(np, session, feeds, args, reference)
    except Exception as exc:
        raise RunnerError("run_failed", "onnxruntime failed running the model: " + str(exc)) from exc
    after_runs = _proc_status_kb()
    memory = {"baseline": baseline, "before_session": before_session, "after_session": after_session,
              "after_runs": after_runs}
    memory.update(_model_memory(before_session, after_session, after_runs, reset,
                                _fixed_fingerprint()["emulator"] is not None))
    result = {"latency_ms": latency, "session_ms": session_ms, "memory_kb": memory}
    if args.profile:
        result["layers_ms"] = _layer_times(session.end_profiling())
    return result


def compare(args):
    """Several models interleaved in this one process: each one's latency and the paired ratios.

    Every round samples each model once, the order rotated from round to round (A B C, B C A, ...),
    so whatever the device does meanwhile (a frequency step, a background task) falls on all of
    them; ratio ``i/j`` is the median over rounds of sample i / sample j, with its 95 % interval.
    Samples are taken on ``_paired_clock`` (named in the result as ``clock``).
    """
    np, ort = _import_runtime()
    _check_models(args)
    sessions = [_session(ort, model, args.threads) for model in args.model]
    feeds = [_inputs(np, session, args.batch) for session in sessions]
    count = len(sessions)
    for index in range(count):
        _warm(sessions[index], feeds[index], args.warmup)
    clock_name, clock = _paired_clock(args.threads)
    try:
        numbers = [_calls_per_sample(sessions[i], feeds[i], args.min_sample_ms) for i in range(count)]

        def take(index, samples):
            for step in range(count):
                which = (index + step) % count
                samples[which].append(_sample_ms(sessions[which], feeds[which], numbers[which], clock))

        samples, sampled = _sample_rounds(np, take, count, args)
    except Exception as exc:
        raise RunnerError("run_failed", "onnxruntime failed running the model: " + str(exc)) from exc
    models = [_latency(np, samples[i], numbers[i], sampled) for i in range(count)]
    ratios = [dict(_ratio(np, samples[i], samples[j]), a=i, b=j) for i in range(count) for j in range(i + 1, count)]
    return {"paired": {"models": models, "ratios": ratios, "timed_s": sampled["timed_s"], "clock": clock_name}}


def _layer_times(profile_path):
    """Node times from onnxruntime's profile, summed per layer, in ms per call.

    A node's layer is the first part of its name's path (``/0/node_mul`` -> ``0``; the exporter
    names nodes after their module; a fused node keeps the name of the first one); nodes without
    one are grouped under their op type. Each node's time
    is its mean over the calls it ran in, so warm-up and calibration calls do not skew it.
    """
    with open(profile_path) as handle:
        events = json.load(handle)
    with contextlib.suppress(OSError):
        os.remove(profile_path)
    nodes = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        parts = node.split("/")  # "/0/node_mul", or "fused /0/node_linear" for a node onnxruntime fused
        layer = parts[1] if len(parts) > 2 else event.get("args", {}).get("op_name", node)
        total, count = nodes.get(node, (layer, 0.0, 0))[1:]
        nodes[node] = (layer, total + event.get("dur", 0) / 1000.0, count + 1)
    layers = {}
    for layer, total, count in nodes.values():
        layers[layer] = layers.get(layer, 0.0) + total / count
    return layers


def probe(args):
    """Fingerprint, plus whether the ONNX DFT op runs (the fft deployed form needs it)."""
    result = {"fingerprint": fingerprint(args.threads)}
    if args.model:
        try:
            np, ort = _import_runtime()
            session = _session(ort, args.model[0], args.threads)
            session.run(None, _inputs(np, session, 1))
            result["dft"] = True
        except RunnerError as exc:
            result["dft"] = False
            result["dft_error"] = str(exc)
    return result


class _DeviceLock:
    """``flock`` on a file in the work dir: one measurement at a time per device.

    Waits at most ``timeout`` seconds, then fails naming the holder's pid (written in the file)."""

    def __init__(self, path, timeout=600.0):
        self.path = path
        self.timeout = timeout
        self.handle = None

    def __enter__(self):
        if self.path:
            self.handle = open(self.path, "a+")
            _wait_for_lock(self.handle, self.timeout)
            self.handle.truncate(0)
            self.handle.write(str(os.getpid()))
            self.handle.flush()
        _emit({"event": LOCKED_EVENT})
        return self

    def __exit__(self, *exc):
        if self.handle:
            self.handle.close()


def _wait_for_lock(handle, timeout):
    import fcntl

    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() > deadline:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                message = "the device lock was held by pid %s for over %.0f s" % (holder, timeout)
                raise RunnerError("device_busy", message) from None
            time.sleep(0.05)


def _emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def parse_args(argv=None):
    return _parser().parse_args(argv)


@functools.lru_cache(maxsize=None)
def _parser():
    """Built once per process (a server's children inherit it: 3 ms each saved)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="ONNX model to measure (or, with --probe, a DFT test model); several with --paired")
    parser.add_argument("--probe", action="store_true", help="print the device fingerprint only")
    parser.add_argument("--paired", action="store_true", help="measure the --model files interleaved")
    parser.add_argument("--calibrate", action="store_true", help="the device's undisturbed speed on the reference")
    parser.add_argument("--calibrate-seconds", type=float, default=1.0, help="how long --calibrate samples")
    parser.add_argument("--profile", action="store_true", help="also return time per layer (onnxruntime profiler)")
    parser.add_argument("--sha256", action="append", help="expected content hash of each --model, in order")
    for name, kind, default, text in MEASURE_KNOBS:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    parser.add_argument("--lock", help="file to flock so one measurement runs at a time on this device")
    parser.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for --lock")
    parser.add_argument("--run-id", help="a token naming this run, for --kill-run")
    parser.add_argument("--kill-run", metavar="RUN_ID", help="kill the runs started with --run-id RUN_ID")
    parser.add_argument("--serve", action="store_true",
                        help="serve requests (JSON argument lists, one per line on stdin), each in a forked child")
    return parser


def serve():
    """Answer requests from stdin until it closes, each measured in a child forked from here."""
    _own_process_group()
    _no_telemetry()
    try:
        np, ort = _import_runtime()
        _prime(np, ort, 1)  # onnxruntime's one-time set-up, once here (each child primes again, cheaply,
        # for its own first-session allocations: without that a model's peak reads 3 MiB more)
    except RunnerError:
        pass  # a device without them: each request then says so itself
    import gc

    _fixed_fingerprint()  # read once here (the runner's hash included), not in every child
    gc.freeze()  # the collector then leaves what is here alone: fewer copy-on-write faults in each child
    pending = b""
    while True:
        while b"\n" not in pending:
            if _output_gone():
                return 0
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return 0
            pending += chunk
        line, _, pending = pending.partition(b"\n")
        status, pending = _serve_one(json.loads(line.decode()), pending)
        if status is None:
            return 0
        _emit({"event": DONE_EVENT, "status": status})
        _reap()  # while the host goes on; before the next request, which it must not overlap


def _output_gone():
    """Wait for the next request; True when stdout lost its reader meanwhile (a host that cut the
    output, e.g. through ``head``): answering is then impossible, so the server must end."""
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(1, 0)  # POLLERR and POLLHUP are always reported
    while True:
        for fd, event in poller.poll():
            if fd == 1 and event & (select.POLLERR | select.POLLHUP):
                return True
            if fd == 0:
                return False


def _name_process(name):
    """Name a forked child after its task (``ps`` and /proc/PID/comm show it; its command line is
    still the server's). Linux and Android only; elsewhere the name stays."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def _serve_one(argv, pending):
    """Fork a child for one request and wait for its answer; (its exit status, stdin read meanwhile),
    or (None, ...) when stdin closed meanwhile: the host is gone, so the child was killed.

    The child writes its exit code to a pipe once its result is out, before the few milliseconds its
    exit takes (unmapping tens of MB); a pipe that closes without one means it died, and its status
    says how. Either way it is reaped here before the next request forks another.
    """
    sys.stdout.flush()
    ended_read, ended_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must end here whatever happens (a cut stdout raises): never serve on
        code = 2
        with contextlib.suppress(BaseException):
            os.close(ended_read)
            code = main([str(arg) for arg in argv], served=True)
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        with contextlib.suppress(BaseException):
            os.write(ended_write, str(code).encode())
        os._exit(code)
    os.close(ended_write)
    try:
        while True:
            ready = select.select([0, ended_read], [], [])[0]
            if ended_read in ready:
                said = os.read(ended_read, 16)
                break
            chunk = os.read(0, 1 << 16)
            if not chunk:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, pending
            pending += chunk
    finally:
        os.close(ended_read)
    if said:
        _REAP.append(pid)
        return int(said), pending
    _, status = os.waitpid(pid, 0)
    return (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)), pending


_REAP = []  # children that answered and are still exiting


def _reap():
    while _REAP:
        os.waitpid(_REAP.pop(), 0)


def main(argv=None, served=False):
    args = parse_args(argv)
    if args.serve and not served:
        return serve()
    result = {"schema": SCHEMA, "ok": True, "pid": os.getpid()}
    if served:
        result["server_pid"] = os.getppid()
    status = 0
    if args.kill_run:
        result.update(kill_run(args.kill_run))
        _emit(result)
        return status
    if served:
        _name_process("nas-" + ("probe" if args.probe else "calibrate" if args.calibrate else
                                "compare" if args.paired else "measure"))
    else:
        _own_process_group()
    _no_telemetry()
    try:
        with _DeviceLock(args.lock, args.lock_timeout):
            result["started_at"] = time.time()
            if args.probe:
                result.update(probe(args))
            elif args.calibrate:
                result.update(calibrate(args))
            else:
                result.update(compare(args) if args.paired else measure(args))
                result["fingerprint"] = fingerprint(args.threads)
            result["ended_at"] = time.time()
    except RunnerError as exc:
        result.update({"ok": False, "error_kind": exc.kind, "error": str(exc)})
        status = 2
    except Exception as exc:  # report anything else as one JSON line too, never a bare traceback
        result.update({"ok": False, "error_kind": "internal", "error": f"{type(exc).__name__}: {exc}"})
        status = 2
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: unloading onnxruntime and numpy costs a few hundred ms per measurement.
    os._exit(code)
