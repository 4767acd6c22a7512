"""Image metrics of prototypes against their training images: SSIM and NCC of the matched
pairs, and each prototype's most similar training image (:func:`nearest_images`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from protoreg.evaluation.matching import _COST_BLOCK_ELEMENTS, matching


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


#: The SSIM above which the reconstruction literature (Haim et al. 2022; Buzaglo et al. 2023)
#: counts a training image as reconstructed (docs/replication.md, MNIST).
LITERATURE_SSIM_THRESHOLD = 0.4
#: How many prototypes may claim the same training image in the nearest-neighbour reading
#: (:func:`nearest_images`).
NN_CAP = 1
#: Candidates per prototype kept from the NCC matrix before its full row is needed.
_NN_CANDIDATES = 32


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (after scaling by their largest magnitude, as
    :func:`pair_ncc`); constant or non-finite rows become 0, so their NCC with anything is 0."""
    a = np.asarray(a, dtype=np.float64)
    out = np.zeros_like(a)
    ok = np.isfinite(a).all(axis=1) & (a != a[:, :1]).any(axis=1) if a.shape[1] else np.zeros(a.shape[0], dtype=bool)
    b = a[ok] / np.abs(a[ok]).max(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(b, axis=1, keepdims=True)
    good = norm[:, 0] > 0
    rows = np.flatnonzero(ok)
    out[rows[good]] = b[good] / norm[good]
    return out


def nearest_images(p: np.ndarray, x: np.ndarray, *, cap: int = NN_CAP) -> tuple[np.ndarray, np.ndarray]:
    """The nearest-neighbour reading of the reconstruction literature: each prototype claims the
    training image most similar to it by NCC, at most ``cap`` prototypes per image.

    Greedy in order of similarity: the prototypes are taken by their best NCC, highest first,
    and each claims its most similar image that fewer than ``cap`` prototypes have claimed (ties
    by the lower index). When M > cap * N the prototypes left over claim nothing (-1).

    Shapes: p (M, d), x (N, d) -> (image index (M,) int, -1 for none; NCC (M,) float64, NaN for
    none). NCC as :func:`pair_ncc`.

    >>> claim, ncc = nearest_images(np.array([[0.0, 1, 2], [0, 1, 3]]), np.array([[0.0, 1, 2], [5, 0, 5]]))
    >>> claim, ncc.round(3)  # the second prototype's best image (NCC 0.982) is taken
    (array([0, 1]), array([1.   , 0.189]))
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    m, n = p.shape[0], x.shape[0]
    claim = np.full(m, -1, dtype=np.int64)
    score = np.full(m, np.nan)
    if m == 0 or n == 0:
        return claim, score
    pz, xz = _zscore_rows(p), _zscore_rows(x)
    k = min(n, _NN_CANDIDATES)
    cand = np.empty((m, k), dtype=np.int64)
    cval = np.empty((m, k))
    block = max(1, _COST_BLOCK_ELEMENTS // n)
    for s in range(0, m, block):
        sim = np.clip(pz[s : s + block] @ xz.T, -1.0, 1.0)
        # stable descending order: ties by the lower image index
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        cand[s : s + block] = top
        cval[s : s + block] = np.take_along_axis(sim, top, axis=1)
    count = np.zeros(n, dtype=np.int64)
    for i in np.argsort(-cval[:, 0], kind="stable"):
        free = count[cand[i]] < cap
        if free.any():
            j = int(cand[i, int(np.argmax(free))])
        else:  # every candidate is taken: the whole row
            if (count >= cap).all():
                continue
            sim = np.clip(xz @ pz[i], -1.0, 1.0)
            sim[count >= cap] = -np.inf
            j = int(np.argmax(sim))
        claim[i] = j
        count[j] += 1
    for i in np.flatnonzero(claim >= 0):  # the claimed pairs' NCC exactly as pair_ncc
        score[i] = pair_ncc(p[i], x[claim[i]])
    return claim, score


def image_metrics(
    prototypes: torch.Tensor,
    x: torch.Tensor,
    image_shape: tuple[int, ...],
    *,
    ssim_threshold: float = 0.5,
    nn_cap: int = NN_CAP,
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
      images reconstructed; when M < N the N - M unmatched images count as not reconstructed;
    - ``recon_ssim04_frac``: the same with the literature's criterion ``SSIM_k > 0.4``
      (:data:`LITERATURE_SSIM_THRESHOLD`);
    - ``nn_ncc``: the nearest-neighbour reading (:func:`nearest_images`: every prototype claims
      its most similar training image by NCC, at most ``nn_cap`` prototypes per image), the mean
      NCC of the prototypes with the images they claim;
    - ``nn_ssim04_frac``: in that reading, the fraction of the N training images claimed by a
      prototype with SSIM > 0.4.

    Conventions: a pair whose prototype is non-finite has SSIM 0 and NCC 0 (non-finite prototypes
    are matched only when there are not enough finite ones); the NCC of a pair where either vector
    is constant is 0. ``recon_ssim`` and ``recon_ncc`` are NaN when M = 0 or N = 0,
    ``recon_ssim_frac`` when N = 0. Training images are assumed finite, in [0, 1] (data_range=1).

    Shapes: prototypes (R, M, d), x (R, N, d) -> dict of six (R,) float64 tensors.

    >>> img = torch.linspace(0, 1, 64, dtype=torch.float64).reshape(1, 1, 64)
    >>> {k: float(v[0]) for k, v in image_metrics(img, img, (8, 8)).items()}
    {'recon_ssim': 1.0, 'recon_ncc': 1.0, 'recon_ssim_frac': 1.0, 'recon_ssim04_frac': 1.0, 'nn_ncc': 1.0, 'nn_ssim04_frac': 1.0}
    """
    p = prototypes.detach().double().cpu().numpy()
    xs = x.detach().double().cpu().numpy()
    shape = _check_image_shape(image_shape, xs.shape[-1])
    if p.shape[-1] != xs.shape[-1]:
        raise ValueError(f"prototypes have d={p.shape[-1]}, inputs d={xs.shape[-1]}")
    names = ("recon_ssim", "recon_ncc", "recon_ssim_frac", "recon_ssim04_frac", "nn_ncc", "nn_ssim04_frac")
    out: dict[str, list[float]] = {k: [] for k in names}
    lit = LITERATURE_SSIM_THRESHOLD
    for r in range(p.shape[0]):
        _, _, ssim, ncc = _matched_scores(p[r], xs[r], shape)
        n = xs.shape[1]
        out["recon_ssim"].append(float(ssim.mean()) if ssim.size else math.nan)
        out["recon_ncc"].append(float(ncc.mean()) if ncc.size else math.nan)
        out["recon_ssim_frac"].append(float((ssim >= ssim_threshold).sum()) / n if n else math.nan)
        out["recon_ssim04_frac"].append(float((ssim > lit).sum()) / n if n else math.nan)
        claim, nn_ncc = nearest_images(p[r], xs[r], cap=nn_cap)
        got = np.flatnonzero(claim >= 0)
        nn_ssim = np.array([pair_ssim(p[r][i].reshape(shape), xs[r][claim[i]].reshape(shape)) for i in got])
        out["nn_ncc"].append(float(nn_ncc[got].mean()) if got.size else math.nan)
        out["nn_ssim04_frac"].append(float(np.unique(claim[got][nn_ssim > lit]).size) / n if n else math.nan)
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
