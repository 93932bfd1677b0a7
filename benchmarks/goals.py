"""Issue #10's goal for one network under domain shift, judged in one place for the model card's
leave-one-domain-out table and for the ablation of any recipe that might ship next."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benchmarks.driver import grouped
from benchmarks.spread import mean_sd

# Met on a held-out domain when the mean over seeds reaches both.
LODO_TARGET = {"balanced_accuracy": 0.80, "roc_auc": 0.88}


def domain_means(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per held-out domain, the seed means of the goal's metrics (raw ablation results of one arm)."""
    return {dom: {k: mean_sd([r["student"]["test"][k] for r in rs])[0] for k in LODO_TARGET}
            for dom, rs in grouped(runs, lambda r: r["held_out"]).items()}


def goal_number(m: dict[str, float], key: str) -> str:
    """A goal's metric to three places, or four where three would round a miss up to the goal (0.8797
    is not 0.880)."""
    value, goal = m[key], LODO_TARGET[key]
    return f"{value:.{4 if value < goal <= round(value, 3) else 3}f}"


def short_of_goal(m: dict[str, float]) -> list[str]:
    """The goal's metrics that fall short, shown as :func:`goal_number` shows them."""
    return [f"{'BA' if k == 'balanced_accuracy' else 'AUC'} {goal_number(m, k)}" for k, goal in LODO_TARGET.items()
            if m[k] < goal]


def goal_cell(m: dict[str, float]) -> str:
    short = short_of_goal(m)
    return f"missed ({', '.join(short)})" if short else "met"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def goal_head(subject: str = "The goal", judged: str = ", mean over seeds") -> str:
    """The words a verdict on issue #10's goal opens with."""
    return (f"**{subject}** (issue #10: at least {LODO_TARGET['balanced_accuracy']:.2f} balanced accuracy and "
            f"{LODO_TARGET['roc_auc']:.2f} ROC AUC on every held-out domain{judged}): ")


def target_verdict(per_domain: dict[str, dict[str, float]], domains: Iterable[str],
                   subject: str = "The goal", judged: str = ", mean over seeds") -> str:
    """Issue #10's goal, judged per held-out domain (on the mean over seeds, unless ``judged`` says
    otherwise); a domain without a run is named as not measured, never counted as met."""
    domains = list(domains)
    met = [d for d in domains if d in per_domain and not short_of_goal(per_domain[d])]
    missed = [f"{d} ({', '.join(short_of_goal(per_domain[d]))})" for d in domains if d in per_domain and d not in met]
    unmeasured = [d for d in domains if d not in per_domain]
    goal = goal_head(subject, judged)
    if not missed and not unmeasured:
        return goal + "met on every domain."
    parts = [f"met on {', '.join(met)}" if met else "met on none",
             *([f"missed on {_and(missed)}"] if missed else []),
             *([f"not measured yet on {', '.join(unmeasured)}"] if unmeasured else [])]
    return goal + "; ".join(parts) + "."
