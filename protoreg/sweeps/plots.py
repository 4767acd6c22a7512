"""The sweep's generic plots: metrics vs N per mask, τ-sweep curves, prototype positions."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from protoreg.sweeps.plan import Plan
from protoreg.sweeps.store import read_prototypes
from protoreg.sweeps.table import Stats, Table, fmt, label, to_float

#: File names of the plots.
PLOT_FILES = {
    "recon_error": "recon_error_vs_n.png",
    "specialization_ratio": "specialization_vs_n.png",
    "outside_hull_frac": "outside_hull_vs_n.png",
    "tau": "tau_sweep.png",
}

def _save(fig: Any, path: Path) -> None:
    from protoreg.evaluation.figures import save_figure

    save_figure(fig, path)


def _mask_colors(masks: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(masks)}


def write_plots(out: Path, plan: Plan, t: Table) -> list[str]:
    """Metric-vs-N plots per mask, τ-sweep curves, and prototype positions at the largest N."""
    from protoreg.evaluation.figures import subplots

    made: list[str] = []
    colors = _mask_colors(t.masks)
    if len(t.ns) > 1:
        specs = [
            ("recon_error", "reconstruction error (mean ± s.e.)", True),
            ("specialization_ratio", "specialization ratio (mean ± s.e.)", False),
            ("outside_hull_frac", "outside-hull fraction (mean ± s.e.)", False),
        ]
        for metric, ylabel, logy in specs:
            for o in t.others():
                fig, ax = subplots(figsize=(7, 4.5))
                for mi, m in enumerate(t.masks):
                    dodge = 1.0 + 0.025 * (mi - (len(t.masks) - 1) / 2)  # side by side on the log axis
                    xs, ys, es, hollow = [], [], [], []
                    for n in t.ns:
                        s = t.stats(metric, mask=m, n=n, other=o)
                        if s.count == 0:
                            continue
                        se = s.std / math.sqrt(s.count) if math.isfinite(s.std) else 0.0
                        if math.isfinite(s.mean):
                            xs.append(n * dodge)
                            ys.append(s.mean)
                            es.append(se)
                            hollow.append(False)
                        else:  # non-finite prototypes: show the median instead
                            xs.append(n * dodge)
                            ys.append(s.median)
                            es.append(0.0)
                            hollow.append(True)
                    if not xs:
                        continue
                    ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, lw=1.3, color=colors[m], label=m)
                    hx = [a for a, h in zip(xs, hollow) if h]
                    if hx:
                        ax.scatter(hx, [b for b, h in zip(ys, hollow) if h], s=70, facecolors="none", edgecolors="k", zorder=5)
                ax.set_xscale("log")
                ax.set_xticks(t.ns)
                ax.set_xticklabels([str(n) for n in t.ns])
                if logy:
                    ax.set_yscale("log")
                ax.set_xlabel("dataset size N")
                ax.set_ylabel(ylabel)
                lab = label(t, o)
                ax.set_title(f"{metric} vs N" + (f" ({lab})" if lab else ""))
                ax.legend(fontsize=7, ncol=2)
                ax.grid(alpha=0.3)
                fig.tight_layout()
                name = PLOT_FILES[metric] if len(t.others()) == 1 else PLOT_FILES[metric].replace(".png", "_" + re.sub(r"[^A-Za-z0-9.=-]+", "_", lab) + ".png")
                _save(fig, out / name)
                made.append(name)
    tau_keys = [k for k in t.keys if k.endswith(".tau")]
    for tk in tau_keys:
        made.append(_tau_plot(out, t, tk, colors, PLOT_FILES["tau"] if len(tau_keys) == 1 else f"tau_sweep_{tk.split('.')[1]}.png"))
    made += _prototype_plot(out, plan, t, colors)
    return made


def _tau_plot(out: Path, t: Table, tau_key: str, colors: Mapping[str, Any], name: str) -> str:
    from protoreg.evaluation.figures import subplots

    ki = t.keys.index(tau_key)
    fig, axes = subplots(1, 3, figsize=(14, 4.2))
    metrics = [("outside_hull_frac", "outside-hull fraction (mean ± s.e.)"), ("recon_error", "reconstruction error (median)"), ("specialization_ratio", "specialization ratio (mean ± s.e.)")]
    for m in t.masks:
        for n in t.ns:
            by_tau: dict[float, list[tuple[str, ...]]] = {}
            for o in t.others():
                by_tau.setdefault(to_float(o[ki]), []).append(o)
            taus = sorted(by_tau)
            for ax, (metric, ylabel) in zip(axes, metrics):
                ys, es = [], []
                for tau in taus:
                    vals = [v for o in by_tau[tau] for v in t.values(metric, mask=m, n=n, other=o)]
                    s = Stats.of(vals)
                    if metric == "recon_error":
                        ys.append(s.median)
                        es.append(0.0)
                    else:
                        ys.append(s.mean)
                        es.append(s.std / math.sqrt(s.count) if s.count and math.isfinite(s.std) else 0.0)
                lab = m + (f", N={n}" if len(t.ns) > 1 else "")
                ax.errorbar(taus, ys, yerr=es, marker="o", ms=4, capsize=3, color=colors[m], label=lab, alpha=0.9)
                ax.set_xscale("log")
                ax.set_xlabel(f"{tau_key} (units of squared sample spacing)")
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"τ sweep ({tau_key})" + (f", N={t.ns[0]}" if len(t.ns) == 1 else ""))
    fig.tight_layout()
    _save(fig, out / name)
    return name



def _prototype_plot(out: Path, plan: Plan, t: Table, colors: Mapping[str, Any]) -> list[str]:
    """Prototype positions of the first seed's run at the largest N, one panel per mask (and setting)."""
    from protoreg.evaluation.figures import subplots

    protos = read_prototypes(out)
    data = {name: (spec.x, spec.y) for name, spec in plan.specs.items()}
    n = max(t.ns)
    first_seed: dict[tuple[str, tuple[str, ...]], Mapping[str, str]] = {}
    for r in t.rows:
        if int(r["n"]) != n or r["run"] not in protos or r["run"] not in data or r["run"] in plan.twins:
            continue  # (a twin repeats the panel of the run it shares its result with)
        key = (r["mask"], t.other(r))
        if key not in first_seed or int(r["seed"]) < int(first_seed[key]["seed"]):
            first_seed[key] = r
    if not first_seed:
        return []
    order = {m: i for i, m in enumerate(t.masks)}
    others = t.others()
    panels = sorted(first_seed.items(), key=lambda kv: (others.index(kv[0][1]), order.get(kv[0][0], 99)))[:36]
    dim = data[panels[0][1]["run"]][0].shape[1]
    cols = min(4, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = subplots(rows_n, cols, figsize=(3.6 * cols, 2.9 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, ((mask, o), r) in zip(axes.flat, panels):
        x, y = data[r["run"]]
        p = protos[r["run"]]
        if dim == 1:
            lo, hi = float(x.min()), float(x.max())
            span = hi - lo or 1.0
            a, b = lo - 0.3 * span, hi + 0.3 * span
            pos = p[:, 0]
            shown = np.clip(np.nan_to_num(pos, nan=b, posinf=b, neginf=a), a, b)
            outside = (pos < lo) | (pos > hi) | ~np.isfinite(pos)
            beyond = shown != pos
            ax.axvspan(lo, hi, color="0.93")
            ax.scatter(x[:, 0], y[:, 0], s=6, color="0.3", zorder=3)
            yb = float(y.min()) - 0.15 * (float(np.ptp(y)) or 1.0)
            ax.scatter(shown[~outside], np.full((~outside).sum(), yb), marker="^", s=14, color="tab:blue", zorder=4)
            ax.scatter(shown[outside & ~beyond], np.full((outside & ~beyond).sum(), yb), marker="^", s=14, color="tab:red", zorder=4)
            ax.scatter(shown[beyond], np.full(beyond.sum(), yb), marker="x", s=22, color="k", zorder=5)
            ax.set_xlim(a - 0.02 * span, b + 0.02 * span)
        else:
            ax.scatter(x[:, 0], x[:, 1], s=6, color="0.3")
            fin = np.isfinite(p).all(1)
            ax.scatter(p[fin, 0], p[fin, 1], marker="^", s=14, color=colors.get(mask, "tab:blue"))
        lab = label(t, o)
        n_out = int(round(to_float(r["outside_hull_frac"]) * len(p)))
        ax.set_title(f"{mask}" + (f"\n{lab}" if lab else "") + f"\n{n_out} of {len(p)} outside, recon error {fmt(to_float(r['recon_error']), 3)}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"prototypes at N = {n} (seed {min(int(r['seed']) for r in first_seed.values())}; ▲ blue inside, red outside the hull, × beyond the view)", fontsize=9)
    fig.tight_layout()
    name = f"prototypes_n{n}.png"
    _save(fig, out / name)
    return [name]

