"""The study's samplers, sized to its budget and seeded per trial.

* **Sizing.** Optuna's defaults assume long studies: NSGA-II's first generation is 50 random
  trials, and TPE samples at random for its first 10. A 12-trial study would then be a random
  search whatever ``--sampler`` says. Here NSGA-II's population is ``max(4, min(50, trials // 4))``
  (so a study sees about four generations) and the model-based samplers (TPE, GP) start after
  ``max(4, min(10, trials // 8))`` random trials.
* **Conditional parameters.** A layer's rank exists only for its kind; TPE runs with ``group=True``
  so that it models each such sub-space jointly instead of falling back to independent draws.
* **Seeding.** Each trial draws with a seed derived from ``(study seed, trial number)``. Trial
  numbers are unique across workers, so workers that start together never propose the same
  sequence, and a single-worker study with ``--seed S`` proposes the same candidates every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "TrialSeededSampler", "make_sampler", "nsga2_population", "startup_trials"]

#: The default: Gaussian-process Bayesian optimisation. On the KWS space (``nas bench search``) it
#: reached random search's 40-trial hypervolume in about 15 trials, TPE in 26; it costs 0.5-1 s per
#: proposal against TPE's 10-15 ms, which is small beside training a real candidate (``--sampler tpe``
#: where trials take well under a second).
DEFAULT_SAMPLER = "gp"


def nsga2_population(n_trials: int) -> int:
    """NSGA-II's population for a study of ``n_trials``: about four generations, 4 to 50."""
    return max(4, min(50, n_trials // 4))


def startup_trials(n_trials: int) -> int:
    """Random start-up trials of the model-based samplers for a study of ``n_trials``: an eighth, 4 to 10."""
    return max(4, min(10, n_trials // 8))


SAMPLERS: dict[str, Callable[[int, int], BaseSampler]] = {
    "tpe": lambda seed, n_trials: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=startup_trials(n_trials)),
    "gp": lambda seed, n_trials: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=startup_trials(n_trials), warn_independent_sampling=False),
    "nsga2": lambda seed, n_trials: optuna.samplers.NSGAIISampler(
        seed=seed, population_size=nsga2_population(n_trials)),
    "random": lambda seed, n_trials: optuna.samplers.RandomSampler(seed=seed),
}
def make_sampler(name: str, seed: int, n_trials: int) -> BaseSampler:
    """Sampler ``name`` sized for a study of ``n_trials``, seeded per trial from ``seed``."""
    return TrialSeededSampler(lambda trial_seed: SAMPLERS[name](trial_seed, n_trials), seed)


class TrialSeededSampler(BaseSampler):
    """Delegates to a sampler rebuilt before each trial with a seed from ``(seed, trial number)``.

    The samplers used here keep their state in the study storage, not in the object, so
    rebuilding costs nothing and changes nothing but the random stream. ``seconds`` keeps the time
    each trial's proposal took (the GP sampler's 0.5-1 s is the search's, not the engine's).
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)
        self.seconds: dict[int, float] = {}

    def _timed(self, trial: FrozenTrial, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.seconds[trial.number] = self.seconds.get(trial.number, 0.0) + time.perf_counter() - started

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        entropy = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
        self._inner = self._factory(int(entropy))
        self._timed(trial, lambda: self._inner.before_trial(study, trial))

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._timed(trial, lambda: self._inner.infer_relative_search_space(study, trial))

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._timed(trial, lambda: self._inner.sample_relative(study, trial, search_space))

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._timed(trial, lambda: self._inner.sample_independent(study, trial, param_name,
                                                                         param_distribution))

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
