"""How many reference points each stratum gets (pure; the draw over a run is in
:mod:`geoxai.mapping.assess`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from geoxai.assess.estimators import SampleDesignError

__all__ = ["allocate"]


def allocate(
    sizes: Mapping[Any, int], n: int, *, min_per_stratum: int | None = None
) -> dict[Any, int]:
    """Points per stratum: a minimum in every stratum, the rest proportional to its area.

    Olofsson et al. (2014, section 5.1.1) advise moving from proportional allocation towards
    equal allocation so that rare classes get enough points (50-100) for their user's accuracy.

    Args:
        sizes: stratum -> pixels (``N_h``).
        n: total sample size.
        min_per_stratum: minimum points per stratum (capped by ``N_h``); default
            ``min(50, n // (2 H))`` (at least 2, so every variance is defined).

    Returns:
        stratum -> ``n_h`` (sums to ``n``, each ``<= N_h``).

    Raises:
        SampleDesignError: ``n`` is smaller than 2 per stratum or larger than the population.
    """
    strata = [h for h, v in sizes.items() if int(v) > 0]
    if not strata:
        raise SampleDesignError("No stratum has any valid pixel: nothing to sample.")
    total = sum(int(sizes[h]) for h in strata)
    if n > total:
        raise SampleDesignError(f"Asked for {n} points but the map has only {total} valid pixels.")
    if n < 2 * len(strata):
        raise SampleDesignError(
            f"{n} points cannot give >= 2 points to each of {len(strata)} strata (needed for a "
            f"variance); ask for at least {2 * len(strata)}."
        )
    lo = max(2, min(50, n // (2 * len(strata)))) if min_per_stratum is None else min_per_stratum
    base = {h: min(int(sizes[h]), lo) for h in strata}
    rest = n - sum(base.values())
    if rest < 0:
        raise SampleDesignError(
            f"min_per_stratum={lo} x {len(strata)} strata exceeds n={n}; lower the minimum or "
            "raise n."
        )
    out = dict(base)
    while rest > 0:
        room = {h: int(sizes[h]) - out[h] for h in strata if int(sizes[h]) > out[h]}
        wsum = sum(int(sizes[h]) for h in room)
        share = {h: rest * int(sizes[h]) / wsum for h in room}
        add = {h: min(room[h], int(math.floor(share[h]))) for h in room}
        left = rest - sum(add.values())
        for h in sorted(room, key=lambda h: share[h] - math.floor(share[h]), reverse=True):
            if left <= 0:
                break
            if add[h] < room[h]:
                add[h] += 1
                left -= 1
        for h, v in add.items():
            out[h] += v
        given = sum(add.values())
        if given == 0:
            break
        rest -= given
    return out
