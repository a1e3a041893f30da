"""Accuracy-aware quantization: evaluate, and while the drop is too large fall the most sensitive ops back.

Sensitivity of a unit = how far the model's outputs move (mean squared error against fp32, on the
first calibration batch) when only that unit runs in int8. The loop first tries the other
calibration algorithms when the data can be read again, then falls units back one at a time,
most sensitive first, keeping a fallback only when the score does not get worse, and always
returns the best model found with the trial log.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from kquant.errors import ConfigurationError
from kquant.runtime import GraphRunner, Predictor

CALIBRATION_ALTERNATIVES = ("minmax", "percentile", "kl")


@dataclasses.dataclass(frozen=True)
class Trial:
    number: int
    action: str
    calibration: str
    fell_back: tuple
    score: float
    drop: float
    seconds: float

    def __str__(self) -> str:
        return (f"trial {self.number:2d}: {self.action:60s} calibration={self.calibration:10s} "
                f"fp32 ops={len(self.fell_back):2d} score={self.score:.5f} drop={self.drop:+.5f} ({self.seconds:.1f} s)")


def accuracy_drop(baseline: float, score: float, relative: bool) -> float:
    drop = baseline - score
    return drop / abs(baseline) if relative and baseline else drop


def rank_by_sensitivity(fp32, units, build, batch) -> list:
    """Units that run int8 kernels, most sensitive first; ``build(int8_only)`` gives a graph with only those in int8."""
    weighted = [u for u in units if u.weighted]
    with GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names) as run:
        reference = run(*batch)
    scores = []
    for unit in weighted:
        graph = build({unit.anchor})
        with GraphRunner(graph.graph_def, fp32.input_names, fp32.output_names) as run:
            outputs = run(*batch)
        scores.append(sum(float(np.mean((o.astype(np.float64) - r) ** 2)) for o, r in zip(outputs, reference)))
    order = np.argsort(scores, kind="stable")[::-1]
    return [weighted[i] for i in order]


def tune(baseline, eval_fn, attempt, ranked, *, calibrations, max_accuracy_drop, relative, max_trials, progress=False,
         predictor=None):
    """Search from the fp32 score ``baseline``; ``attempt(calibration, fell_back) -> FrozenGraph``; ``eval_fn`` scores
    ``predictor(graph, calibration, fell_back)`` (default: ``Predictor(graph)``, the graph in TF's executor).

    Returns (best graph, its calibration, the units it keeps out of int8, trials). ``progress``: a bar over
    the ``max_trials`` budget with the last trial's score and drop.
    """
    with tqdm(total=max_trials, desc="tuning", unit="trial", disable=not progress, leave=False) as bar:
        return _search(baseline, eval_fn, attempt, ranked, calibrations, max_accuracy_drop, relative, max_trials, bar,
                       predictor or (lambda graph, calibration, fell_back: Predictor(graph)))


def _search(baseline, eval_fn, attempt, ranked, calibrations, max_accuracy_drop, relative, max_trials, bar,
            predictor_for):
    trials: list[Trial] = []
    best = None

    def run_trial(action, calibration, fell_back):
        nonlocal best
        start = time.perf_counter()
        graph = attempt(calibration, fell_back)
        predictor = predictor_for(graph, calibration, tuple(fell_back))
        score = score_of(eval_fn, predictor)
        predictor.close()
        drop = accuracy_drop(baseline, score, relative)
        trial = Trial(len(trials), action, calibration, tuple(fell_back), score, drop, time.perf_counter() - start)
        trials.append(trial)
        bar.update()
        bar.set_postfix(score=f"{score:.4f}", drop=f"{drop:+.4f}")
        meets = drop <= max_accuracy_drop
        key = (meets, -len(fell_back) if meets else score)
        if best is None or key > best[0]:
            best = (key, graph, calibration, tuple(fell_back))
        return meets

    first, *others = calibrations
    if run_trial("int8", first, ()):
        return best[1], best[2], best[3], trials
    for calibration in others:
        if len(trials) >= max_trials:
            break
        if run_trial(f"recalibrate with {calibration}", calibration, ()):
            return best[1], best[2], best[3], trials
    calibration = best[2]
    fell_back, score = [], max(t.score for t in trials if t.calibration == calibration)
    for unit in ranked:
        if len(trials) >= max_trials:
            break
        candidate = [*fell_back, unit.anchor]
        if run_trial(f"keep {unit.anchor[-50:]} out of int8", calibration, candidate):
            break
        if trials[-1].score >= score:  # a fallback that lowers the score is undone
            fell_back, score = candidate, trials[-1].score
    if not best[0][0]:
        worst = min(t.drop for t in trials)
        warnings.warn(f"no trial met max_accuracy_drop={max_accuracy_drop}; returning the best found "
                      f"(drop {worst:.4f}, {worst - max_accuracy_drop:.4f} over the target)", stacklevel=4)
    return best[1], best[2], best[3], trials


def score_of(eval_fn, predict) -> float:
    """``eval_fn(predict)`` as a float; anything but a finite number is a ConfigurationError saying so."""
    score = eval_fn(predict)
    if isinstance(score, np.ndarray) and score.size == 1:
        score = score.item()
    if not isinstance(score, (numbers.Real, np.generic)) or isinstance(score, bool) or not math.isfinite(float(score)):
        raise ConfigurationError(f"eval_fn returned {score!r}; it must return a finite number, higher is better "
                                 "(e.g. the accuracy)")
    return float(score)
