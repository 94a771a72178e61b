"""Weighted Distribution-Based Score Fusion of several result lists, for cross-language queries.

The engine fuses hybrid queries itself (DBSF or weighted RRF, stores/qdrant_layout.py), but its DBSF takes no weights,
and the cross-language search needs them: measured on the multilingual golden set (docs/retrieval.md),
BM25 must count for a fifth of a dense list there, since across languages it shares no term with the
answer and only brings same-language distractors. So the lists of a cross-language query are fetched in
one batch and fused here, with the engine's own DBSF normalisation: each list's scores are mapped from
[mean - 3 sd, mean + 3 sd] onto [0, 1] (clipped), then a point's fused score is the weighted sum over
the lists it appears in.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

from backend.retrieval.stores.base import Hit

# Spread of the scores a list's normalisation covers, in standard deviations either side of the mean.
DBSF_SIGMAS = 3.0


def _normalised(hits: Sequence[Hit]) -> list[float]:
    scores = [h.score for h in hits]
    mean = sum(scores) / len(scores)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    low, high = mean - DBSF_SIGMAS * sd, mean + DBSF_SIGMAS * sd
    if high <= low:  # one hit, or all equal: nothing tells them apart, each counts half
        return [0.5] * len(scores)
    return [min(max((s - low) / (high - low), 0.0), 1.0) for s in scores]


def weighted_dbsf(lists: Sequence[Sequence[Hit]], weights: Sequence[float]) -> list[Hit]:
    """One ranking from several: weighted sum of DBSF-normalised scores, best first (ties: first seen).

    A hit keeps the payload and dense vector of its first appearance; its score becomes the fused one."""
    if len(lists) != len(weights):
        raise ValueError("one weight per list")
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, weight in zip(lists, weights):
        if not hits or weight <= 0:
            continue
        for hit, norm in zip(hits, _normalised(hits)):
            fused[hit.id] = fused.get(hit.id, 0.0) + weight * norm
            if hit.id not in first or (first[hit.id].dense is None and hit.dense is not None):
                first[hit.id] = hit
    order = sorted(fused, key=lambda pid: -fused[pid])
    return [replace(first[pid], score=fused[pid]) for pid in order]
