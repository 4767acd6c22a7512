"""Evaluation metrics: pure functions on tensors, one value per run.

Each takes batched inputs with a leading run axis R and returns shape (R,).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity


def fit_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the fit, ``mean_{i,k} (pred - y)^2``.

    Shapes: pred, y (R, N, k) -> (R,).

    >>> fit_mse(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    tensor([1.])
    """
    return (pred - y).square().mean(dim=(1, 2))


#: Elements of one block of prototype-sample differences in :func:`matching` (32 MB of float64).
_COST_BLOCK_ELEMENTS = 1 << 22


def matching(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of prototypes p (M, d) to training inputs x (N, d).

    Minimizes the summed Euclidean distance ``sum_k ||p[proto_idx[k]] - x[sample_idx[k]]||``
    with ``scipy.optimize.linear_sum_assignment``; with M != N it is rectangular and has
    K = min(M, N) pairs. Non-finite prototypes get a cost larger than any finite assignment can
    reach, so they are matched only when there are not enough finite ones (distance ``inf``).

    Shapes: p (M, d), x (N, d) -> (proto_idx (K,) int, sample_idx (K,) int, distances (K,) float64),
    proto_idx increasing. This is the matching behind :func:`recon_error` and :func:`image_metrics`.

    >>> matching(np.array([[0.0], [1.0]]), np.array([[1.0], [0.5]]))
    (array([0, 1]), array([1, 0]), array([0.5, 0. ]))
    """
    finite = np.isfinite(p).all(axis=1)
    cost = np.full((p.shape[0], x.shape[0]), np.inf)
    rows_f = np.flatnonzero(finite)
    # blocks of prototypes, so the (block, N, d) difference stays small for large N and d
    block = max(1, _COST_BLOCK_ELEMENTS // max(1, x.shape[0] * x.shape[1]))
    for start in range(0, rows_f.size, block):
        idx = rows_f[start : start + block]
        diff = p[idx][:, None, :] - x[None, :, :]
        # scaled so that squaring cannot overflow (coordinates up to ~1e308 keep finite distances)
        scale = np.abs(diff).max(axis=-1, keepdims=True)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            cost[idx] = np.sqrt(((diff / scale) ** 2).sum(-1)) * scale[..., 0]
    # Non-finite prototypes get a cost larger than any finite assignment can reach, so they are
    # matched only when there are not enough finite ones (and then contribute inf).
    finite_cost = cost[np.isfinite(cost)]
    k = min(cost.shape) + 1
    big = min((finite_cost.max() + 1.0), np.finfo(np.float64).max / k**2) * k if finite_cost.size else 1.0
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    return rows, cols, cost[rows, cols]


def recon_error(prototypes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction error: mean distance of the Hungarian matching of prototypes to inputs.

    The matching (:func:`matching`: ``scipy.optimize.linear_sum_assignment`` on Euclidean
    distances) pairs each prototype with a distinct training input; with M != N it is rectangular
    and has min(M, N) pairs. ``inf`` when a non-finite prototype has to be matched.

    Shapes: prototypes (R, M, d), x (R, N, d) -> (R,) float64.

    >>> recon_error(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[1.0], [0.5]]]))
    tensor([0.2500], dtype=torch.float64)
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    return torch.tensor([_mean(matching(p[r], xs[r])[2]) for r in range(p.shape[0])], dtype=torch.float64)


def _mean(d: np.ndarray) -> float:
    """Mean that stays finite for finite values near the float64 limit."""
    if d.size == 0:
        return math.nan
    with np.errstate(over="ignore"):
        m = float(d.mean())
    if not math.isfinite(m) and np.isfinite(d).all():
        m = float((d / d.size).sum())
    return m


SSIM_WIN_SIZE = 7


def _check_image_shape(image_shape: tuple[int, ...], d: int | None = None) -> tuple[int, ...]:
    """``image_shape`` as a tuple of ints; ValueError (naming it) if unusable for 7-wide SSIM."""
    shape = tuple(int(s) for s in image_shape)
    if not shape or min(shape) < SSIM_WIN_SIZE:
        raise ValueError(
            f"image_shape {tuple(image_shape)} is too small for SSIM: every side must be at least "
            f"win_size={SSIM_WIN_SIZE}"
        )
    if d is not None and math.prod(shape) != d:
        raise ValueError(f"image_shape {tuple(image_shape)} has {math.prod(shape)} pixels, but inputs have d={d}")
    return shape


def pair_ssim(p_img: np.ndarray, x_img: np.ndarray) -> float:
    """SSIM of a prototype image and a training image, both of the same shape (every side >= 7).

    ``skimage.metrics.structural_similarity(p_img, x_img, win_size=7, data_range=1)`` on float64
    images (Wang et al. 2004 with scikit-image's defaults: uniform 7x7 window, sample covariance,
    K1 = 0.01, K2 = 0.03, mean over the windows that lie inside the image):
    ``S = (2 mu_p mu_x + C1)(2 s_px + C2) / ((mu_p^2 + mu_x^2 + C1)(s_p^2 + s_x^2 + C2))``,
    ``C1 = 0.01^2``, ``C2 = 0.03^2``. A non-finite prototype counts as 0, and so does a finite one
    so large (beyond ~1e150) that the float64 computation overflows (0 is then the limit).
    ValueError if a side is smaller than 7.

    >>> img = np.linspace(0, 1, 64).reshape(8, 8)
    >>> pair_ssim(img, img)
    1.0
    """
    p_img = np.asarray(p_img, dtype=np.float64)
    x_img = np.asarray(x_img, dtype=np.float64)
    _check_image_shape(p_img.shape)
    if p_img.shape != x_img.shape:
        raise ValueError(f"image shapes differ: {p_img.shape} vs {x_img.shape}")
    if not np.isfinite(p_img).all():
        return 0.0
    with np.errstate(all="ignore"):
        s = float(structural_similarity(p_img, x_img, win_size=SSIM_WIN_SIZE, data_range=1))
    return s if math.isfinite(s) else 0.0


def pair_ncc(p: np.ndarray, x: np.ndarray) -> float:
    """Pearson correlation of two vectors (images are flattened), in [-1, 1].

    ``sum (p - mean p)(x - mean x) / sqrt(sum (p - mean p)^2 * sum (x - mean x)^2)``, computed
    after scaling each vector by its largest magnitude so huge coordinates cannot overflow.
    0 when p is non-finite or either vector is constant (its correlation is undefined).

    >>> pair_ncc(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    1.0
    >>> pair_ncc(np.array([0.0, 1.0, 2.0]), np.array([4.0, 4.0, 4.0]))
    0.0
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    if p.size == 0 or x.size == 0 or not np.isfinite(p).all() or not np.isfinite(x).all():
        return 0.0
    if (p == p[0]).all() or (x == x[0]).all():
        return 0.0
    p = p / np.abs(p).max()
    x = x / np.abs(x).max()
    a, b = p - p.mean(), x - x.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den == 0.0 or not math.isfinite(den):  # only subnormal leftovers of nearly constant vectors
        return 0.0
    return float(np.clip(float(a @ b) / den, -1.0, 1.0))


def _matched_scores(
    p: np.ndarray, x: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(proto_idx, sample_idx, ssim, ncc) of the :func:`matching` of p (M, d) to x (N, d)."""
    rows, cols, _ = matching(p, x)
    ssim = np.array([pair_ssim(p[i].reshape(shape), x[j].reshape(shape)) for i, j in zip(rows, cols)], dtype=np.float64)
    ncc = np.array([pair_ncc(p[i], x[j]) for i, j in zip(rows, cols)], dtype=np.float64)
    return rows, cols, ssim, ncc


def image_metrics(
    prototypes: torch.Tensor,
    x: torch.Tensor,
    image_shape: tuple[int, ...],
    *,
    ssim_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Image reconstruction quality of the prototypes, on the same matching as :func:`recon_error`.

    Inputs are flattened images: ``d = prod(image_shape)``, each side of ``image_shape`` >= 7
    (SSIM's 7-wide window), else ValueError naming ``image_shape``. With the K = min(M, N) pairs
    ``(i_k, j_k)`` of :func:`matching` (prototype i_k reconstructs training image j_k):

    - ``recon_ssim``: ``mean_k SSIM(p_{i_k}, x_{j_k})`` (:func:`pair_ssim`, i.e. scikit-image's
      ``structural_similarity(..., win_size=7, data_range=1)``);
    - ``recon_ncc``: ``mean_k NCC(p_{i_k}, x_{j_k})``, Pearson correlation of the flattened pair
      (:func:`pair_ncc`);
    - ``recon_ssim_frac``: ``#{k : SSIM_k >= ssim_threshold} / N``, the fraction of training
      images reconstructed; when M < N the N - M unmatched images count as not reconstructed.

    Conventions: a pair whose prototype is non-finite has SSIM 0 and NCC 0 (non-finite prototypes
    are matched only when there are not enough finite ones); the NCC of a pair where either vector
    is constant is 0. ``recon_ssim`` and ``recon_ncc`` are NaN when M = 0 or N = 0,
    ``recon_ssim_frac`` when N = 0. Training images are assumed finite, in [0, 1] (data_range=1).

    Shapes: prototypes (R, M, d), x (R, N, d) -> dict of three (R,) float64 tensors.

    >>> img = torch.linspace(0, 1, 64, dtype=torch.float64).reshape(1, 1, 64)
    >>> {k: float(v[0]) for k, v in image_metrics(img, img, (8, 8)).items()}
    {'recon_ssim': 1.0, 'recon_ncc': 1.0, 'recon_ssim_frac': 1.0}
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    shape = _check_image_shape(image_shape, xs.shape[-1])
    if p.shape[-1] != xs.shape[-1]:
        raise ValueError(f"prototypes have d={p.shape[-1]}, inputs d={xs.shape[-1]}")
    out: dict[str, list[float]] = {"recon_ssim": [], "recon_ncc": [], "recon_ssim_frac": []}
    for r in range(p.shape[0]):
        _, _, ssim, ncc = _matched_scores(p[r], xs[r], shape)
        n = xs.shape[1]
        out["recon_ssim"].append(float(ssim.mean()) if ssim.size else math.nan)
        out["recon_ncc"].append(float(ncc.mean()) if ncc.size else math.nan)
        out["recon_ssim_frac"].append(float((ssim >= ssim_threshold).sum()) / n if n else math.nan)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def matched_image_pairs(p: np.ndarray, x: np.ndarray, image_shape: tuple[int, ...]) -> list[tuple[int, int, float]]:
    """Matched (training image, prototype) pairs of one run, best reconstructed first (for figures).

    Shapes: p (M, d), x (N, d), ``d = prod(image_shape)`` -> K = min(M, N) tuples
    ``(sample_idx, proto_idx, ssim)`` on the :func:`matching` of :func:`image_metrics`, sorted by
    SSIM descending (ties by sample_idx); SSIM as in :func:`pair_ssim` (0 for a non-finite
    prototype). ValueError, naming ``image_shape``, if a side is smaller than 7.

    >>> img = np.linspace(0, 1, 64).reshape(1, 64)
    >>> matched_image_pairs(np.concatenate([img, img[:, ::-1]]), img, (8, 8))
    [(0, 0, 1.0)]
    """
    p = np.asarray(p, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    shape = _check_image_shape(image_shape, x.shape[-1])
    rows, cols, ssim, _ = _matched_scores(p, x, shape)
    pairs = [(int(j), int(i), float(s)) for i, j, s in zip(rows, cols, ssim)]
    return sorted(pairs, key=lambda t: (-t[2], t[0]))


def strongest_units(hidden: torch.Tensor) -> torch.Tensor:
    """Index of the strongest-responding unit for each sample, ``(R, N, M) -> (R, N)``."""
    return hidden.argmax(dim=-1)


def specialization_ratio(hidden: torch.Tensor) -> torch.Tensor:
    """Distinct units that are some sample's strongest responder, divided by N.

    Shapes: hidden (R, N, M) -> (R,) float64, in (0, min(M, N)/N].

    >>> specialization_ratio(torch.tensor([[[1.0, 0.0], [0.9, 0.1]]]))
    tensor([0.5000], dtype=torch.float64)
    """
    r, n, m = hidden.shape
    winners = strongest_units(hidden)
    hit = torch.zeros(r, m, dtype=torch.bool, device=hidden.device)
    hit.scatter_(1, winners, True)
    return hit.sum(-1).double().cpu() / n
