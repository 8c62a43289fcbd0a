"""Search-space validation: a bad file gets one line naming the field, exit code 2, nothing else."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas.space import SpaceError, load_space
from nas.spec import FORMS
from tests.spaces import FAST_SPACE, write_space

NAS = str(Path(sys.executable).with_name("nas"))


SHIPPED = sorted(path.stem for path in (Path(__file__).parents[1] / "search_spaces").glob("*.toml"))


@pytest.mark.parametrize("shipped", SHIPPED)
def test_shipped_spaces_load(shipped):
    space = load_space(shipped)
    assert space.name == shipped
    assert space.objectives[0].metric == "accuracy"


@pytest.mark.parametrize(("edit", "field"), [
    (("[training]", "[training]\nlearning_rat = 0.1"), "training.learning_rat"),
    (("epochs = 3", 'epochs = "two"'), "training.epochs"),
    (("lowrank_ranks = [2, 4]", "lowrank_ranks = [2, 64]"), "layers.lowrank_ranks"),
    (('dataset = "digits"', 'dataset = "cifar"'), "data.dataset"),
    (('metric = "params"', 'metric = "flops"'), "objectives.2.metric"),
])
def test_bad_space_is_one_line_naming_the_field(tmp_path, edit, field):
    path = write_space(tmp_path, FAST_SPACE.replace(*edit))
    with pytest.raises(SpaceError) as error:
        load_space(path)
    assert field in str(error.value) and str(path) in str(error.value)

    done = subprocess.run([NAS, "study", "start", "bad", "--space", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], done.stderr
    assert not (tmp_path / "studies").exists(), "a bad space must not create a study"


def test_unknown_field_lists_what_is_allowed(tmp_path):
    path = write_space(tmp_path, FAST_SPACE.replace("[backbone]", "[backbone]\ndepth = 3"))
    with pytest.raises(SpaceError, match="unknown field 'backbone.depth'; allowed here: hidden_layers, widths"):
        load_space(path)


def test_sampling_respects_the_space(tmp_path):
    space = load_space(write_space(tmp_path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        spec = space.sample(study.ask(), in_features=64, num_classes=10)
        assert len(spec.layers) - 1 in space.backbone.hidden_layers
        assert spec.num_classes == 10 and spec.layers[-1].kind == "dense"
        for layer in spec.layers[:-1]:
            assert layer.width in space.backbone.widths
            if layer.kind == "lowrank":
                assert layer.rank in space.layers.lowrank_ranks
            if layer.kind == "toeplitz":
                assert layer.rank in space.layers.displacement_ranks


def test_forms_restrict_what_is_measured(tmp_path):
    """The output layer's default choices do not add back a form [layers] left out."""
    space = load_space(write_space(tmp_path, FAST_SPACE.replace('displacement_ranks = [1, 2]',
                                                                'displacement_ranks = [1, 2]\nforms = ["dense"]')))
    assert space.forms() == ["dense"]
    assert load_space(write_space(tmp_path, FAST_SPACE, "all.toml")).forms() == list(FORMS)


def test_runner_settings_come_from_the_space_file(tmp_path):
    text = FAST_SPACE.replace("warmup = 1", "warmup = 1\npin_cpu = 0\nmax_seconds = 7.5\ntie_margin = 0.1")
    space = load_space(write_space(tmp_path, text))
    settings = space.measure.settings()
    assert (settings.pin_cpu, settings.max_seconds, space.measure.tie_margin) == (0, 7.5, 0.1)
    assert "--pin-cpu" in settings.runner_args() and "7.5" in settings.runner_args()


@pytest.mark.parametrize(("edit", "message"), [
    (('metric = "latency_ms"', 'metric = "latency_ms"\nagent = "pi4"'),
     "objective latency_ms: agent 'pi4' is not one of the study's agents (local)"),
    (("[training]", '[output]\nkinds = ["toeplitz"]\ndisplacement_ranks = [12]\n[training]'),
     "output.displacement_ranks: rank 12 is larger than the data's 10 classes"),
    (("[training]", '[output]\nkinds = ["toeplitz"]\ndisplacement_ranks = [20]\n[training]'),
     "output.displacement_ranks: rank 20 is larger than the smallest width 16"),
])
def test_settings_that_cannot_work_are_refused_at_start(tmp_path, edit, message):
    path = write_space(tmp_path, FAST_SPACE.replace(*edit))
    done = subprocess.run([NAS, "study", "start", "bad", "--space", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "studies").exists()
