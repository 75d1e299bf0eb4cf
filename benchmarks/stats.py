"""Figures, their repeats and targets: the one timing/statistics helper of the benchmarks.

A :class:`Figure` holds the samples of one measured quantity for our system and for its baseline (taken
in the same run, interleaved). Its value is a statistic of the samples (median, or a percentile for
latencies); the ratio ours/baseline is what a :class:`Target` judges.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linear between the closest ranks."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass(frozen=True)
class Target:
    """``ratio >= value`` (``op`` ``">="``) or ``ratio <= value`` (``"<="``); ``text`` as in the issue."""

    op: str
    value: float
    text: str

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value


@dataclass
class Figure:
    """One row of the results table: our samples beside the baseline's, in one unit."""

    group: str
    name: str
    unit: str
    ours_label: str
    baseline_label: str
    target: Target | None = None
    #: which statistic of the samples is the figure: "median", "p50", "p95", "max"
    stat: str = "median"
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    note: str = ""

    def value(self, samples: list[float]) -> float:
        if not samples:
            return float("nan")
        if self.stat == "max":
            return max(samples)
        if self.stat.startswith("p"):
            return percentile(samples, float(self.stat[1:]))
        return statistics.median(samples)

    @property
    def ratio(self) -> float:
        b = self.value(self.baseline)
        return self.value(self.ours) / b if b else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.ours or not self.baseline:
            return None
        return self.target.met(self.ratio)

    def to_json(self) -> dict[str, Any]:
        def summary(samples: list[float]) -> dict[str, Any]:
            if not samples:
                return {"n": 0}
            return {"n": len(samples), "value": self.value(samples), "min": min(samples),
                    "median": statistics.median(samples), "max": max(samples),
                    "p95": percentile(samples, 95), "samples": samples}

        return {"group": self.group, "figure": self.name, "unit": self.unit, "statistic": self.stat,
                "ours": {"label": self.ours_label, **summary(self.ours)},
                "baseline": {"label": self.baseline_label, **summary(self.baseline)},
                "ratio": self.ratio, "target": self.target.text if self.target else None,
                "met": self.met, "note": self.note}


def interleave(rounds: int, ours: Callable[[], float], baseline: Callable[[], float],
               figure: Figure) -> Figure:
    """Measure ``ours`` and ``baseline`` ``rounds`` times each in ABBA order (A first in even rounds,
    B first in odd ones), so that slow drift of the machine favours neither; samples go into ``figure``."""
    for n in range(rounds):
        order = ((ours, figure.ours), (baseline, figure.baseline))
        for measure, samples in (order if n % 2 == 0 else order[::-1]):
            samples.append(measure())
    return figure


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...`` then ``elapsed()`` gives the seconds the block took."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
