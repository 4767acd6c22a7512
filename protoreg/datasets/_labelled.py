"""What the labelled image sets (``digits``, ``mnist``) share: ``data.classes`` (digits to
keep), a seeded class-stratified ``data.n`` (null: every image) and one-hot or label targets."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from protoreg.errors import DataError
from protoreg.datasets.rules import require
from protoreg.plugin_api import Dataset

#: Classes of a labelled image set: the digits 0..9.
CLASSES = 10


def stratified_counts(counts: Sequence[int], n: int) -> list[int]:
    """Per class ``n * count / total``, rounded by largest remainder so the counts sum to ``n``.

    Ties go to the earlier class; no class gets more than it has (``0 <= n <= total``).
    """
    total = int(sum(counts))
    if not 0 <= n <= total:
        raise DataError(f"data.n: {n} is not between 0 and the {total} available")
    exact = [n * c / total for c in counts]
    out = [math.floor(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


class LabelledImages(Dataset):
    """A fixed set of labelled digit images (subclasses set ``class_counts``, ``image_shape``
    and :meth:`images`)."""

    targets = ("onehot", "label")
    defaults = {"classes": None}
    #: Images per digit 0..9.
    class_counts: ClassVar[tuple[int, ...]] = ()
    image_shape: ClassVar[tuple[int, ...]] = ()

    def images(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """Every image, ``(x (size, d) in [0, 1], labels (size,))``, read-only."""
        raise NotImplementedError

    def check(self, data: Mapping[str, Any]) -> list[str]:
        p: list[str] = []
        classes = data.get("classes")
        ok = True
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or len(classes) == 0:
                return ["data.classes: empty; list digits 0..9 to keep, or null for all ten"]
            bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < CLASSES]
            if bad:
                p.append(f"data.classes: {', '.join(map(str, bad))} not a digit 0..9")
            dup = sorted({c for c in classes if list(classes).count(c) > 1} - set(bad))
            if dup:
                p.append(f"data.classes: lists {', '.join(map(str, dup))} more than once")
            ok = not bad and not dup
        n = data.get("n")
        if ok and n is not None and n >= 2:
            kept = self.class_counts if classes is None else [self.class_counts[int(c)] for c in classes]
            if n > sum(kept):
                within = "" if classes is None else f" of digits {list(classes)}"
                p.append(f"data.n: {n} is more than the {sum(kept)} images {self.name!r} has{within} (null takes them all)")
        return p

    def load(self, data: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        require(self, data)
        x, labels = self.images()
        classes = data.get("classes")
        keep = np.arange(len(labels)) if classes is None else np.flatnonzero(np.isin(labels, list(classes)))
        n = data.get("n")
        if n is not None:
            present = sorted(set(labels[keep].tolist()))
            by_class = [keep[labels[keep] == c] for c in present]
            rng = np.random.default_rng(seed)
            counts = stratified_counts([len(i) for i in by_class], int(n))
            keep = np.sort(np.concatenate([rng.choice(idx, size=k, replace=False) for idx, k in zip(by_class, counts)]))
        lab = labels[keep]
        y = np.eye(CLASSES)[lab] if self.target(data) == "onehot" else lab[:, None].astype(np.float64)
        return x[keep].copy(), y, {"image_shape": self.image_shape}
