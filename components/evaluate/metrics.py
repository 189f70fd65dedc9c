"""The scores of the recipe's table, in plain Python (hand-checkable; no scikit-learn/scipy).

JSQuAD's exact match and F1 follow JGLUE's own patch of the SQuAD metric: lower-case, strip
trailing "。", collapse whitespace runs to one space (no punctuation or article removal: neither
makes sense for Japanese), then F1 over characters (bag-of-characters overlap), the best over the
gold answers, averaged over questions.
"""

from __future__ import annotations

import math
from collections import Counter


def accuracy(gold: list, predicted: list) -> float:
    if not gold or len(gold) != len(predicted):
        raise ValueError(f"accuracy: {len(gold)} gold vs {len(predicted)} predicted")
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def macro_f1(gold: list[int], predicted: list[int], num_labels: int) -> float:
    """Mean of per-label F1 over the labels that occur in gold or predictions."""
    scores = []
    for label in range(num_labels):
        tp = sum(g == p == label for g, p in zip(gold, predicted))
        fp = sum(p == label != g for g, p in zip(gold, predicted))
        fn = sum(g == label != p for g, p in zip(gold, predicted))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson's r; 0.0 when either side is constant (no linear relation can be shown)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"pearson: needs two equally long lists of at least 2 ({len(x)}, {len(y)})")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def ranks(values: list[float]) -> list[float]:
    """1-based ranks; tied values share the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's r of the (average) ranks."""
    return pearson(ranks(x), ranks(y))


def normalize_answer(text: str) -> str:
    """JGLUE's JSQuAD normalisation (see the module doc)."""
    return " ".join(text.lower().rstrip("。").split())


def exact_match(gold_answers: list[str], predicted: str) -> float:
    return float(any(normalize_answer(g) == normalize_answer(predicted) for g in gold_answers))


def char_f1(gold_answers: list[str], predicted: str) -> float:
    """Character-overlap F1 against the best-matching gold answer."""
    pred = list(normalize_answer(predicted))
    best = 0.0
    for gold_text in gold_answers:
        gold = list(normalize_answer(gold_text))
        if not gold or not pred:
            best = max(best, float(gold == pred))
            continue
        same = sum((Counter(gold) & Counter(pred)).values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def score(names: tuple[str, ...], gold: list, predicted: list, *, num_labels: int = 0) -> dict[str, float]:
    """The named metrics of one evaluation. For ``exact_match``/``f1`` gold items are lists of
    answer texts and predictions texts; otherwise gold/predicted are labels or scores."""
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = accuracy(gold, predicted)
        elif name == "macro_f1":
            out[name] = macro_f1(gold, predicted, num_labels)
        elif name == "pearson":
            out[name] = pearson(gold, predicted)
        elif name == "spearman":
            out[name] = spearman(gold, predicted)
        elif name == "exact_match":
            out[name] = sum(exact_match(g, p) for g, p in zip(gold, predicted)) / len(gold)
        elif name == "f1":
            out[name] = sum(char_f1(g, p) for g, p in zip(gold, predicted)) / len(gold)
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out
