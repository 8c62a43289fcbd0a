"""The architecture spec: the one object that crosses every module boundary.

The search space samples it, the model builder builds it, the exporter exports it, agents
measure it, the study stores it in trial user attributes, the report shows it and ``pick``
rebuilds from it. It is plain data (JSON in, JSON out) so that no module needs to know how
another one stores things.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from nas.layers.forms import FORMS, KINDS

Kind = Literal["dense", "lowrank", "toeplitz"]
Form = Literal["fft", "fftmm", "dense"]

__all__ = ["FORMS", "KINDS", "ArchSpec", "LayerSpec"]
SCHEMA_VERSION = 1
_LETTER = {"dense": "D", "lowrank": "L", "toeplitz": "T"}


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer: its kind, output width, rank and deployed form.

    ``rank`` is the low-rank k or the Toeplitz-like displacement rank r (None for dense).
    ``form`` only matters for Toeplitz-like layers: "fft" and "fftmm" keep the generators' spectra
    (ONNX ``DFT`` nodes, or transforms as small matrix products), "dense" materialises the matrix;
    which is fastest is a property of the device.
    """

    kind: Kind
    width: int
    rank: int | None = None
    form: Form = "fft"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "dense") != (self.rank is None):
            raise ValueError(f"a {self.kind} layer {'takes no' if self.kind == 'dense' else 'needs a'} rank")
        if self.form not in FORMS:
            raise ValueError(f"deployed form {self.form!r} is not one of {', '.join(FORMS)}")

    @property
    def code(self) -> str:
        """Short form for tables: ``T2`` (Toeplitz-like r=2), ``L16`` (low-rank 16), ``D``."""
        return _LETTER[self.kind] + ("" if self.rank is None else str(self.rank))


@dataclass(frozen=True)
class ArchSpec:
    """A whole model: an MLP from ``in_features`` through ``layers`` (the last one is the classifier)."""

    in_features: int
    layers: tuple[LayerSpec, ...]
    activation: str = "relu"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].width

    @property
    def code(self) -> str:
        """Per-layer code, e.g. ``T2 L16 D``."""
        return " ".join(layer.code for layer in self.layers)

    @property
    def widths(self) -> str:
        """Layer widths from input to output, e.g. ``64-256-10``."""
        return "-".join(str(w) for w in (self.in_features, *(layer.width for layer in self.layers)))

    @property
    def has_toeplitz(self) -> bool:
        return any(layer.kind == "toeplitz" for layer in self.layers)

    @property
    def form(self) -> str:
        """The deployed form of the Toeplitz-like layers ("-" when there are none, "mixed" if they differ)."""
        forms = {layer.form for layer in self.layers if layer.kind == "toeplitz"}
        return "-" if not forms else forms.pop() if len(forms) == 1 else "mixed"

    def with_form(self, form: str) -> ArchSpec:
        """The same architecture with every Toeplitz-like layer deployed in ``form``."""
        layers = tuple(replace(layer, form=form) if layer.kind == "toeplitz" else layer for layer in self.layers)
        return replace(self, layers=layers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        data["schema"] = SCHEMA_VERSION
        if not self.meta:
            data.pop("meta")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ValueError(f"architecture spec schema {schema} is not supported (expected {SCHEMA_VERSION})")
        return cls(
            in_features=int(data["in_features"]),
            layers=tuple(LayerSpec(**layer) for layer in data["layers"]),
            activation=data.get("activation", "relu"),
            meta=dict(data.get("meta", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))
