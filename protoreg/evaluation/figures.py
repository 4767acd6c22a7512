"""Figures of prototypes against the data.

Every figure is a :class:`matplotlib.figure.Figure` on its own Agg canvas (matplotlib's object
API): no backend is selected and pyplot is never imported, so a notebook's inline backend and
``pyplot.show()`` keep working, and the figures returned can be displayed, saved or dropped by
the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from protoreg.rundirs.io import replacing

INSIDE_COLOR = "tab:blue"
OUTSIDE_COLOR = "tab:red"


def new_figure(**kwargs: Any) -> Figure:
    """A figure on its own Agg canvas (``kwargs``: :class:`~matplotlib.figure.Figure`'s, e.g.
    ``figsize``); nothing global is touched."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, squeeze: bool = True) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a :func:`new_figure` and its axes."""
    fig = new_figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``): a reader never sees a half-written image."""
    with replacing(path, ".tmp.png") as tmp:  # the suffix tells savefig the format
        fig.savefig(tmp, dpi=dpi)


def figure_image(fig: Figure) -> np.ndarray:
    """The figure drawn by an Agg canvas as an RGB array (3, H, W) of uint8, what TensorBoard's
    ``add_image`` takes (``add_figure`` would import pyplot)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1))


def _clip_for_display(p: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes far off (or infinite) drawn at the edge of a window around the data."""
    span = max(hi - lo, 1e-12)
    a, b = lo - 0.5 * span, hi + 0.5 * span
    shown = np.clip(np.nan_to_num(p, nan=b, posinf=b, neginf=a), a, b)
    return shown, (shown != p)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top-2 principal directions ``(d, 2)`` of ``x`` (N, d)."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:2].T
    if comps.shape[1] < 2:
        comps = np.pad(comps, ((0, 0), (0, 2 - comps.shape[1])))
    return mean, comps


def _hull_polygon(pts: np.ndarray) -> np.ndarray | None:
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):
        return None
    return pts[hull.vertices]


def prototype_figure(
    x: np.ndarray,
    y: np.ndarray,
    positions: np.ndarray,
    outside: np.ndarray,
    *,
    steps: Sequence[int] | None = None,
    trajectory: np.ndarray | None = None,
    title: str = "",
) -> Figure:
    """Data, prototypes and the hull; in 1-D also prototype trajectories.

    x (N, d), y (N, k), positions (M, d), outside (M,) bool; trajectory (T, M) 1-D positions at
    ``steps`` (T,). d = 1: inputs vs targets with prototypes on the axis and the hull interval
    shaded; d = 2: scatter with the hull polygon; d > 2: the same in a 2-D PCA projection.
    """
    d = x.shape[1]
    outside = np.asarray(outside, dtype=bool)
    with_traj = d == 1 and trajectory is not None and len(trajectory) > 1
    fig, axes = subplots(1, 2 if with_traj else 1, figsize=(11 if with_traj else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    if d == 1:
        lo, hi = float(x.min()), float(x.max())
        ax.axvspan(lo, hi, color="0.92", label="convex hull")
        ax.scatter(x[:, 0], y[:, 0], s=14, color="0.25", label="training data", zorder=3)
        shown, clipped = _clip_for_display(positions[:, 0], lo, hi)
        base = float(np.min(y[:, 0])) - 0.08 * (float(np.ptp(y[:, 0])) or 1.0)
        for mask, color, label in ((~outside, INSIDE_COLOR, "prototype (inside)"), (outside, OUTSIDE_COLOR, "prototype (outside)")):
            if mask.any():
                ax.scatter(shown[mask], np.full(mask.sum(), base), marker="^", s=40, color=color, label=label, zorder=4)
        if clipped.any():
            ax.scatter(shown[clipped], np.full(clipped.sum(), base), marker="x", s=60, color="k", label="beyond view", zorder=5)
        ax.set_xlabel("input x")
        ax.set_ylabel("target y")
    else:
        if d == 2:
            mean, comps = np.zeros(2), np.eye(2)
            ax.set_xlabel("x0")
            ax.set_ylabel("x1")
        else:
            mean, comps = pca_2d(x)
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
        xp = (x - mean) @ comps
        finite = np.isfinite(positions).all(1)
        pp = np.where(finite[:, None], np.nan_to_num(positions) - mean, 0.0) @ comps
        poly = _hull_polygon(xp)
        if poly is not None:
            ax.fill(poly[:, 0], poly[:, 1], color="0.92", label="convex hull" + (" (projected)" if d > 2 else ""))
        ax.scatter(xp[:, 0], xp[:, 1], s=14, color="0.25", label="training data", zorder=3)
        # a square window twice the data's extent: far (or infinite) prototypes are drawn on its
        # edge, in their direction from the data's centre, so the data stays readable
        lo2, hi2 = xp.min(0), xp.max(0)
        centre, half = (lo2 + hi2) / 2, max(float((hi2 - lo2).max()), 1e-12)
        v = pp - centre
        reach = np.abs(v).max(1) / half
        clipped = (reach > 1) | ~finite
        shown = centre + v / np.maximum(reach, 1.0)[:, None]
        for mask, color, label in ((~outside & ~clipped, INSIDE_COLOR, "prototype (inside)"), (outside & ~clipped, OUTSIDE_COLOR, "prototype (outside)")):
            if mask.any():
                ax.scatter(shown[mask, 0], shown[mask, 1], marker="^", s=40, color=color, label=label, zorder=4)
        if clipped.any():
            ax.scatter(shown[clipped, 0], shown[clipped, 1], marker="x", s=50, color="k", label="beyond view (direction)", zorder=5)
        pad = 1.04 * half
        ax.set_xlim(centre[0] - pad, centre[0] + pad)
        ax.set_ylim(centre[1] - pad, centre[1] + pad)
        ax.set_aspect("equal")
    ax.set_title(title or f"{outside.sum()} of {len(outside)} prototypes outside the hull")
    ax.legend(loc="best", fontsize=7)
    if with_traj:
        assert trajectory is not None and steps is not None
        ax2 = axes[0, 1]
        lo, hi = float(x.min()), float(x.max())
        ax2.axhspan(lo, hi, color="0.92")
        traj, _ = _clip_for_display(trajectory, lo, hi)
        left = (trajectory < lo) | (trajectory > hi) | ~np.isfinite(trajectory)
        # one collection per colour: one Line2D per unit takes minutes for 10^5 units
        expelled = left.any(axis=0)
        t = np.broadcast_to(np.asarray(steps, dtype=float)[:, None], traj.shape)
        segs = np.stack([t, traj], axis=-1).transpose(1, 0, 2)  # (M, T, 2)
        for mask, color, lw, alpha in ((~expelled, INSIDE_COLOR, 0.8, 0.5), (expelled, OUTSIDE_COLOR, 1.4, 0.9)):
            if mask.any():
                ax2.add_collection(LineCollection(list(segs[mask]), colors=color, linewidths=lw, alpha=alpha))
        ax2.autoscale_view()
        ax2.set_xlabel("step")
        ax2.set_ylabel("prototype position")
        ax2.set_title("trajectories (red: left the hull)")
    fig.tight_layout()
    return fig


def reconstruction_figure(
    x: np.ndarray,
    prototypes: np.ndarray,
    image_shape: Sequence[int],
    *,
    pairs: Sequence[tuple[int, int, float]] | None = None,
    shown: int = 12,
    title: str = "",
) -> Figure:
    """Training images next to their matched prototypes, sorted by SSIM: the ``shown // 2`` best
    and the ``shown // 2`` worst pairs (all of them when there are few).

    ``x`` (N, d) training images and ``prototypes`` (M, d), flattened, d = prod(image_shape); the
    matching is the one of ``recon_error`` (:func:`protoreg.evaluation.images.matched_image_pairs`). Each
    pair is drawn as [training image | prototype] on a grey scale clipped to [0, 1], with its SSIM.
    ``pairs``: those pairs when already computed.
    """
    from protoreg.evaluation.images import matched_image_pairs

    shape = tuple(int(s) for s in image_shape)
    if pairs is None:
        pairs = matched_image_pairs(np.asarray(prototypes, dtype=float), np.asarray(x, dtype=float), shape)
    if len(pairs) > shown:
        half = shown // 2
        picked = list(pairs[:half]) + list(pairs[-(shown - half):])
    else:
        picked = list(pairs)
    cols = min(6, max(1, len(picked)))
    rows = max(1, -(-len(picked) // cols))
    fig, axes = subplots(rows, cols, figsize=(1.9 * cols, 1.25 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (i, j, ssim) in zip(axes.flat, picked):
        img = np.asarray(x[i], dtype=float).reshape(shape[:2] if len(shape) >= 2 else (1, -1))
        proto = np.nan_to_num(np.asarray(prototypes[j], dtype=float), nan=0.0, posinf=1.0, neginf=0.0).reshape(img.shape)
        gap = np.full((img.shape[0], 1), np.nan)
        ax.imshow(np.clip(np.hstack([img, gap, proto]), 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"#{i}  SSIM {ssim:.2f}", fontsize=7)
    n_best = min(len(picked), shown // 2) if len(pairs) > shown else len(picked)
    head = title or "training image | matched prototype"
    fig.suptitle(f"{head} (best {n_best} and worst {len(picked) - n_best} of {len(pairs)} pairs by SSIM)" if len(pairs) > shown else head, fontsize=8)
    fig.tight_layout()
    return fig
