"""What can go wrong with a measurement, each said in one line a user can act on, and whether
``nas study resume`` should try the candidate again."""

from __future__ import annotations

ERROR_HINTS = {
    "onnxruntime_missing": "install it on the device: python3 -m pip install onnxruntime numpy",
    "numpy_missing": "install it on the device: python3 -m pip install numpy",
    "model_load_failed": "the device's onnxruntime cannot load this model (an old onnxruntime without DFT?)",
    "model_corrupt": "the uploaded model was damaged in transit; it will be uploaded again",
    "device_busy": "another measurement held the device that long; is a runner stuck on the device?",
}
RETRYABLE_KINDS = {"device_busy"}


class AgentError(Exception):
    """A measurement could not be made; the message is one line a user can act on."""

    retryable = False  # whether ``nas study resume`` redoes a candidate that failed with it


class AgentUnreachable(AgentError):
    """The device did not answer (network, sshd down, timeout)."""

    retryable = True


class RunnerTimeout(AgentError):
    """The runner overran its timeout and was killed on the device; another try may well work."""

    retryable = True


class RunnerOutputError(AgentError):
    """The runner's output was cut or is not its JSON result (a killed runner, a dropped stream)."""

    retryable = True


class DeviceError(AgentError):
    """The device answered but could not do the work (no onnxruntime, model not loadable...)."""

    def __init__(self, message: str, kind: str = "device") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.kind in RETRYABLE_KINDS
