import json

import pytest

from nas.model import build_model
from nas.spec import ArchSpec, LayerSpec


def spec() -> ArchSpec:
    return ArchSpec(64, (LayerSpec("toeplitz", 128, 2), LayerSpec("lowrank", 32, 16), LayerSpec("dense", 10)))


def test_json_round_trip_and_codes():
    original = spec()
    again = ArchSpec.from_json(original.to_json())
    assert again == original
    assert json.loads(original.to_json())["schema"] == 1
    assert original.code == "T2 L16 D"
    assert original.widths == "64-128-32-10"
    assert original.num_classes == 10


def test_with_form_changes_only_toeplitz_layers():
    dense_form = spec().with_form("dense")
    assert dense_form.form == "dense" and spec().form == "fft"
    assert [layer.form for layer in dense_form.layers] == ["dense", "fft", "fft"]


@pytest.mark.parametrize("bad", [
    dict(kind="conv", width=4), dict(kind="dense", width=4, rank=2), dict(kind="lowrank", width=4),
    dict(kind="toeplitz", width=4, rank=1, form="sparse"),
])
def test_bad_layers_are_refused(bad):
    with pytest.raises(ValueError):
        LayerSpec(**bad)


def test_unknown_schema_is_refused():
    data = spec().to_dict() | {"schema": 99}
    with pytest.raises(ValueError, match="schema 99"):
        ArchSpec.from_dict(data)


def test_build_model_is_seeded_and_has_the_spec_shapes():
    a, b = build_model(spec(), seed=3), build_model(spec(), seed=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert (pa == pb).all()
    assert a[0].in_features == 64 and a[0].out_features == 128 and a[-1].out_features == 10
    other = build_model(spec(), seed=4)
    assert any((pa != pc).any() for pa, pc in zip(a.parameters(), other.parameters(), strict=True))
