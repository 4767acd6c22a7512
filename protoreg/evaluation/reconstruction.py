"""Reading the training data back out of anyone's prototypes: :func:`reconstruct`.

The optimal one-to-one matching of prototypes to training inputs and every reconstruction
metric ``fit`` reports, computed by the same functions (:func:`protoreg.evaluation.matching.matching`,
:func:`protoreg.evaluation.images.image_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from protoreg.evaluation.matching import _mean, matching

__all__ = ["Reconstruction", "reconstruct"]


@dataclass(frozen=True)
class Reconstruction:
    """The result of :func:`reconstruct`."""

    #: ``(prototype, training input, distance)`` of each matched pair, prototypes in order;
    #: ``min(M, N)`` pairs
    pairs: list[tuple[int, int, float]]
    #: ``recon_error`` (the mean matched distance) and, for images, ``recon_ssim``,
    #: ``recon_ncc``, ``recon_ssim_frac``, ``recon_ssim04_frac``, ``nn_ncc``, ``nn_ssim04_frac``
    metrics: dict[str, float]
    image_shape: tuple[int, ...] | None = None
    _prototypes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False)
    _x: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False)

    @property
    def recon_error(self) -> float:
        return self.metrics["recon_error"]

    def figure(self, *, shown: int = 12, title: str = "") -> Any:
        """The reconstructions figure of ``fit`` (``reconstructions.png``): training images next to
        their matched prototypes, the best and the worst by SSIM. Images only."""
        if self.image_shape is None:
            raise ValueError("figure() draws images: give reconstruct() an image_shape")
        from protoreg.evaluation.figures import reconstruction_figure

        return reconstruction_figure(self._x, self._prototypes, self.image_shape, shown=shown, title=title)


def reconstruct(prototypes: Tensor | np.ndarray, x: Tensor | np.ndarray, *, image_shape: Sequence[int] | None = None) -> Reconstruction:
    """Match prototypes (M, d) to training inputs (N, d) one to one, optimally (the summed
    Euclidean distance is minimal; exact in every dimension), and report what ``fit`` reports:
    ``recon_error`` and, when the inputs are flattened images of ``image_shape`` (pixels in
    [0, 1], each side >= 7), the SSIM and NCC figures.

    >>> r = reconstruct(torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.5]]))
    >>> r.pairs, r.recon_error
    ([(0, 1, 0.5), (1, 0, 0.0)], 0.25)
    """
    p = np.asarray(torch.as_tensor(prototypes).detach().cpu(), dtype=np.float64)
    xs = np.asarray(torch.as_tensor(x).detach().cpu(), dtype=np.float64)
    if p.ndim != 2 or xs.ndim != 2 or p.shape[1] != xs.shape[1]:
        raise ValueError(f"prototypes (M, d) and x (N, d) with the same d, got {p.shape} and {xs.shape}")
    rows, cols, dist = matching(p, xs)
    metrics: dict[str, float] = {"recon_error": _mean(dist)}
    shape = None
    if image_shape is not None:
        from protoreg.evaluation.images import image_metrics

        shape = tuple(int(s) for s in image_shape)
        for key, value in image_metrics(torch.from_numpy(p)[None], torch.from_numpy(xs)[None], shape).items():
            metrics[key] = float(value[0])
    pairs = [(int(i), int(j), float(d)) for i, j, d in zip(rows, cols, dist)]
    return Reconstruction(pairs, metrics, shape, p, xs)

