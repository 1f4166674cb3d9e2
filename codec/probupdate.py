"""Frame probability updates the encoder sends when they save bits: luma and chroma intra-mode
probabilities (section 16.2) and motion-vector probabilities (section 17.2).

Counts come from the frame's decisions; each tree or bool probability is re-estimated from them,
and an update is taken only if its saving on this frame's symbols exceeds what coding it costs.
(Coefficient probabilities, section 13.4, are in ``encoder._coeff_updates``.)
"""

from __future__ import annotations

import numpy as np

from . import tables
from .rate import BOOL_COST

ONE_BIT = 256  # costs in 1/256 bit, as rate.BOOL_COST


def _node_counts(tree: np.ndarray, values) -> np.ndarray:
    """counts[node, bit]: the bools coding ``values`` with ``tree`` (tree_index form) take."""
    counts = np.zeros((len(tree) // 2, 2), np.int64)
    paths = {}

    def walk(i, path):
        for b in range(2):
            nxt = int(tree[i + b])
            if nxt > 0:
                walk(nxt, path + [(i >> 1, b)])
            else:
                paths[-nxt] = path + [(i >> 1, b)]
    walk(0, [])
    for v in values:
        for node, bit in paths[int(v)]:
            counts[node, bit] += 1
    return counts


def _best(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1)
    return np.where(total > 0, np.clip(np.rint(256 * counts[:, 0] / np.maximum(total, 1)), 1, 255), 128).astype(np.int64)


def _cost(probs, counts) -> int:
    p = np.asarray(probs, np.int64)
    return int((counts[:, 0] * BOOL_COST[p, 0] + counts[:, 1] * BOOL_COST[p, 1]).sum())


def mode_prob_update(tree: np.ndarray, old: np.ndarray, values) -> np.ndarray:
    """The probabilities for ``tree`` to code ``values`` with: new ones when the saving beats the
    update (a flag and 8 bits per probability, section 19.2), else ``old``."""
    counts = _node_counts(tree, values)
    new = _best(counts)
    saving = _cost(old, counts) - _cost(new, counts)
    if saving > 8 * ONE_BIT * len(old) + ONE_BIT:
        return new.astype(np.uint8)
    return np.asarray(old, np.uint8)


def _short_paths() -> dict:
    """For each short magnitude 0..7, the (probability index, bit) steps of SMALL_MV_TREE."""
    paths = {}

    def walk(i, path):
        for b in range(2):
            nxt = int(tables.SMALL_MV_TREE[i + b])
            if nxt > 0:
                walk(nxt, path + [(i >> 1, b)])
            else:
                paths[-nxt] = path + [(i >> 1, b)]
    walk(0, [])
    return paths


_SHORT_PATHS = _short_paths()


def mv_bool_counts(values: np.ndarray) -> np.ndarray:
    """How often each of a component's 19 probabilities codes a 0 and a 1 (counts[prob, bit]) when
    the component values ``values`` are coded (section 17.1)."""
    x = np.asarray(values, np.int64)
    a = np.abs(x)
    counts = np.zeros((19, 2), np.int64)
    short = a < 8
    counts[tables.MVP_IS_SHORT] = (int(short.sum()), int((~short).sum()))
    n = np.bincount(a[short], minlength=8)
    for v, path in _SHORT_PATHS.items():
        for node, bit in path:
            counts[tables.MVP_SHORT + node, bit] += n[v]
    long = a[~short]
    for i in (0, 1, 2) + tuple(range(tables.MV_LONG_BITS - 1, 3, -1)):
        ones = int(((long >> i) & 1).sum())
        counts[tables.MVP_BITS + i] += (len(long) - ones, ones)
    bit3 = (long[(long & 0xFFF0) != 0] >> 3) & 1  # bit 3 is implicit when no higher bit is set
    counts[tables.MVP_BITS + 3] += (len(bit3) - int(bit3.sum()), int(bit3.sum()))
    counts[tables.MVP_SIGN] += (int((x > 0).sum()), int((x < 0).sum()))
    return counts


def mv_prob_update(old: np.ndarray, differences) -> np.ndarray:
    """MV probabilities (2 x 19) for coding ``differences`` ((row, col) quarter-pel differences
    from the best predictor): each replaced by a 7-bit value (even, or 1) where that saves more
    than its 7 bits and update flag."""
    differences = np.asarray(differences, np.int64).reshape(-1, 2)
    new = np.array(old, np.uint8)
    for comp in range(2):
        counts = mv_bool_counts(differences[:, comp])
        for i in range(19):
            n0, n1 = int(counts[i, 0]), int(counts[i, 1])
            if n0 + n1 == 0:
                continue
            p = min(254, max(2, int(round(256 * n0 / (n0 + n1))))) & ~1  # codable: even
            cur = int(old[comp, i])
            saving = (n0 * (BOOL_COST[cur, 0] - BOOL_COST[p, 0]) + n1 * (BOOL_COST[cur, 1] - BOOL_COST[p, 1]))
            u = int(tables.MV_UPDATE_PROBS[comp, i])
            if p != cur and saving > 7 * ONE_BIT + BOOL_COST[u, 1] - BOOL_COST[u, 0]:
                new[comp, i] = p
    return new
