"""The champion rules: which evaluated run is the best, and when a registered version takes the alias.

Both rules compare validation headline metrics (higher is better), never test metrics,
so the model that is reported and registered is chosen without looking at the test split.
"""

from __future__ import annotations


def champion_of(results: list[dict]) -> dict:
    """The run with the highest validation headline.

    A run whose validation value is None (no validation label had both classes) ranks
    below every scored run. Ties go to the method that comes first in `results`, then to
    its lowest seed.

    Args:
        results: evaluated runs, each with `["method"]`, `["seed"]` and `["validation"]["value"]`
            (float or None); report and register pass them in the same (load) order.
    """
    first_position: dict[str, int] = {}
    for i, r in enumerate(results):
        first_position.setdefault(r["method"], i)

    def rank(r: dict) -> tuple[float, int, int]:
        value = r["validation"]["value"]
        return (value if value is not None else float("-inf"), -first_position[r["method"]], -r["seed"])

    return max(results, key=rank)


def best_run_per_method(results: list[dict], methods: list[str]) -> dict[str, dict]:
    """{method: its best-validation run} (`champion_of` over that method's runs), in `methods` order.

    The run the report shows for each method (per-label table, curves for `dvc plots`).
    """
    return {m: champion_of([r for r in results if r["method"] == m]) for m in methods}


def beats_champion(val_metric: float, previous: float | None) -> bool:
    """True when a new version should take the `champion` alias.

    It does when there is no champion yet, or when its validation metric is strictly
    better than the champion's; an equal or worse version leaves the alias where it is.
    """
    return previous is None or val_metric > previous
