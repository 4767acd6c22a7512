"""Training images beside their matched prototypes, for a few masks of an image sweep.

    python benchmarks/reconstruction_figure.py SWEEP_DIR OUT.png [--seed S] [--mask M ...] [--pairs K]

Per mask (default: none, coverage, overlap) the run with seed S (default 0): the K best and the
K worst (training image, prototype) pairs of the optimal matching by SSIM
(:func:`protoreg.evaluation.images.matched_image_pairs`), each pair as two images, the training image first.
The training data is re-created from the sweep's config (``protoreg.load_data``: every mask of a
seed trains on the same data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask", action="append", default=None)
    ap.add_argument("--pairs", type=int, default=4)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # a script, not a library call
    import matplotlib.pyplot as plt

    import protoreg
    from protoreg.evaluation.images import matched_image_pairs
    from protoreg.rundirs.layout import read_prototype_positions

    sweep = Path(args.sweep)
    masks = args.mask or ["none", "coverage", "overlap"]
    rows = {r["run"]: r for r in protoreg.load_sweep(sweep).rows}
    n = next(iter(rows.values()))["n"]
    x, _ = protoreg.load_data(f"data.n={n}", f"train.seed={args.seed}", config=str(sweep / "sweep.yaml"))
    shape = {64: (8, 8), 784: (28, 28)}[x.shape[1]]
    k = args.pairs
    fig, axes = plt.subplots(len(masks), 4 * k, figsize=(4 * k * 0.7, len(masks) * 0.95), squeeze=False)
    for row, mask in enumerate(masks):
        run = f"{mask}__seed={args.seed}"
        p = read_prototype_positions(sweep / "prototypes.csv", run)
        pairs = matched_image_pairs(p, x, shape)
        chosen = pairs[:k] + pairs[-k:]
        for c, (j, i, s) in enumerate(chosen):
            for half, img in enumerate((x[j], p[i])):
                ax = axes[row, 2 * c + half]
                ax.imshow(np.clip(img.reshape(shape), 0, 1), cmap="gray_r", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if half:
                    ax.set_title(f"{s:.2f}", fontsize=6, pad=1)
        axes[row, 0].set_ylabel(mask, fontsize=7)
    fig.suptitle(f"training image | prototype (SSIM), best {k} and worst {k} pairs, seed {args.seed}", fontsize=8)
    fig.savefig(args.out, dpi=150, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
