"""The built-in study ``alba2026``: the paper's claims C1-C4 checked on a sweep's results.

Registered through :func:`protoreg.plugins.hookspecs.protoreg_register_studies` like any third-party
study; a sweep selects it with ``sweep.study: alba2026`` (``configs/paper.yaml`` does). The mask
names it looks for are the built-in losses: ``coverage``, ``separation``, ``overlap`` and the
baseline ``none``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from protoreg.plugin_api import Claim, Study, StudyResults, Verdict, hookimpl
from protoreg.sweeps.table import Stats, Table, fmt, label, to_float

#: Thresholds of the claims' checks (stated in summary.md next to each verdict).
C3_FIT_TOL = 0.1  #: "fit about as well": mean fit MSE within 10% of the target variance (R^2 within 0.1)
C4_RHO_MIN = 0.8  #: "grows with tau": Spearman rank correlation of tau and mean outside-hull fraction
C4_NEAR_FRAC = 0.25  #: "near the baseline": excess over the baseline at the nominal tau <= 25% of the excess at the largest tau



#: Differences below this are ties (the ratios are multiples of 1/N averaged over seeds).
EPS = 1e-9


def _verdict(held: int, total: int) -> Verdict:
    if total == 0:
        return "NOT EVALUATED"
    return "PASS" if held == total else "PARTIAL" if held else "FAIL"


def _claim(cid: str, statement: str, verdict: Verdict, summary: str, details: Sequence[str], numbers: Mapping[str, Any] | None = None) -> Claim:
    return Claim(cid, statement, verdict, summary, dict(numbers or {}), tuple(details))




def _cells(t: Table) -> list[tuple[int, tuple[str, ...]]]:
    return [(n, o) for o in t.others() for n in t.ns]


def _where(t: Table, held: int, total: int) -> str:
    return f"holds at {held} of {total} " + ("N" if not t.keys else f"(N, {', '.join(t.keys)}) cells")


def _cell_name(t: Table, n: int, o: tuple[str, ...]) -> str:
    lab = label(t, o)
    return f"N={n}" + (f" ({lab})" if lab else "")


def _paired(t: Table, metric: str, a: str, b: str, n: int, o: tuple[str, ...]) -> str:
    """Mean ± standard error of the per-seed difference a - b (same data and initial prototypes)."""
    va = {r["seed"]: to_float(r[metric]) for r in t.rows if r["mask"] == a and int(r["n"]) == n and t.other(r) == o}
    vb = {r["seed"]: to_float(r[metric]) for r in t.rows if r["mask"] == b and int(r["n"]) == n and t.other(r) == o}
    d = np.array([va[s] - vb[s] for s in va if s in vb], dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return ""
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return f"paired by seed: {fmt(float(d.mean()), 3)} ± {fmt(se, 2)} (s.e., {d.size} seeds)"


def claim_c1(t: Table, metric: str = "recon_error") -> Claim:
    """C1 by ``recon_error`` (lowest is best) or, for image data, by ``recon_ssim`` (highest is
    best; claim id ``C1-SSIM``)."""
    higher = metric == "recon_ssim"
    cid = "C1-SSIM" if higher else "C1"
    st = "coverage-only has the highest mean SSIM of matched prototype/training-image pairs at every N" if higher else "coverage-only has the lowest mean reconstruction error at every N"
    if "coverage" not in t.masks or len(t.masks) < 2:
        return _claim(cid, st, "NOT EVALUATED", "", ["needs the coverage-only mask and at least one other mask (sweep.masks)"])
    details, held, total = [], 0, 0
    numbers: dict[str, Any] = {}
    sign = -1.0 if higher else 1.0  # compare sign * value: lower is better
    for n, o in _cells(t):
        means = {m: t.stats(metric, mask=m, n=n, other=o).mean for m in t.masks}
        means = {m: v for m, v in means.items() if not math.isnan(v)}
        best_other = min((m for m in means if m != "coverage"), key=lambda m: sign * means[m], default=None)
        if "coverage" not in means or best_other is None:
            continue
        good = sign * means["coverage"] < sign * means[best_other] - EPS
        held += good
        total += 1
        numbers[_cell_name(t, n, o)] = {"coverage": means["coverage"], "best_other": best_other, f"best_other_{metric}": means[best_other], "holds": bool(good)}
        label = "highest" if higher else "lowest"
        details.append(
            f"{_cell_name(t, n, o)}: coverage {fmt(means['coverage'])} vs {label} other ({best_other}) {fmt(means[best_other])} "
            f"{'✓' if good else '✗'}; coverage - {best_other} {_paired(t, metric, 'coverage', best_other, n, o)}"
        )
    return _claim(cid, st, _verdict(held, total), _where(t, held, total), details, numbers)


def claim_c2(t: Table) -> Claim:
    st = "coverage-only raises the specialization ratio over the baseline"
    if "coverage" not in t.masks or "none" not in t.masks:
        return _claim("C2", st, "NOT EVALUATED", "", ["needs the coverage-only and baseline (none) masks"])
    details, held, total = [], 0, 0
    numbers: dict[str, Any] = {}
    for n, o in _cells(t):
        cov = t.stats("specialization_ratio", mask="coverage", n=n, other=o).mean
        base = t.stats("specialization_ratio", mask="none", n=n, other=o).mean
        if math.isnan(cov) or math.isnan(base):
            continue
        diff = cov - base
        pair = _paired(t, "specialization_ratio", "coverage", "none", n, o)
        if base >= 1.0 - EPS:
            details.append(f"{_cell_name(t, n, o)}: baseline already at the maximum 1 (not counted)")
            continue
        good = diff > EPS
        held += good
        total += 1
        numbers[_cell_name(t, n, o)] = {"coverage": cov, "baseline": base, "holds": bool(good)}
        details.append(
            f"{_cell_name(t, n, o)}: coverage {fmt(cov)} vs baseline {fmt(base)} "
            f"({'+' if diff >= 0 else ''}{fmt(0.0 if abs(diff) <= EPS else diff, 3)}) {'✓' if good else '✗ (equal)' if abs(diff) <= EPS else '✗'}"
            + (f"; {pair}" if pair else "")
        )
    return _claim("C2", st, _verdict(held, total), _where(t, held, total), details, numbers)


def _family(t: Table, metric: str, masks: Sequence[str], n: int, o: tuple[str, ...]) -> Stats:
    vals: list[float] = []
    for m in masks:
        vals += t.values(metric, mask=m, n=n, other=o)
    return Stats.of(vals)


def claim_c3(t: Table, target_var: Mapping[int, float]) -> Claim:
    st = (
        "overlap-active masks fit about as well as overlap-free ones (fit MSE) but reconstruct worse "
        "and have a higher outside-hull fraction"
    )
    on = [m for m in t.masks if "overlap" in m.split("+")]
    off = [m for m in t.masks if "overlap" not in m.split("+")]
    if not on or not off:
        return _claim("C3", st, "NOT EVALUATED", "", ["needs masks with and without the overlap loss"])
    details = [f"overlap-active: {', '.join(on)}; overlap-free: {', '.join(off)} (runs pooled per N)"]
    held = {"fit about as well": 0, "reconstruct worse": 0, "higher outside-hull fraction": 0}
    total = 0
    numbers: dict[str, Any] = {}
    for n, o in _cells(t):
        f_on, f_off = _family(t, "fit_mse", on, n, o), _family(t, "fit_mse", off, n, o)
        r_on, r_off = _family(t, "recon_error", on, n, o), _family(t, "recon_error", off, n, o)
        h_on, h_off = _family(t, "outside_hull_frac", on, n, o), _family(t, "outside_hull_frac", off, n, o)
        if f_on.count == 0 or f_off.count == 0:
            continue
        total += 1
        var = target_var.get(n, math.nan)
        fit_ok = abs(f_on.mean - f_off.mean) <= C3_FIT_TOL * var if math.isfinite(var) else False
        robust = not (math.isfinite(r_on.mean) and math.isfinite(r_off.mean))
        rec_ok = (r_on.median > r_off.median + EPS) if robust else (r_on.mean > r_off.mean + EPS)
        out_ok = h_on.mean > h_off.mean + EPS
        for k, v in zip(held, (fit_ok, rec_ok, out_ok)):
            held[k] += v
        numbers[_cell_name(t, n, o)] = {
            "fit_mse": [f_on.mean, f_off.mean], "recon_error": [r_on.mean, r_off.mean], "recon_error_median": [r_on.median, r_off.median],
            "outside_hull_frac": [h_on.mean, h_off.mean], "holds": [bool(fit_ok), bool(rec_ok), bool(out_ok)],
        }
        rec = (
            f"recon median {fmt(r_on.median)} vs {fmt(r_off.median)} (means non-finite)"
            if robust
            else f"recon {fmt(r_on.mean)} vs {fmt(r_off.mean)}"
        )
        details.append(
            f"{_cell_name(t, n, o)}: fit MSE {fmt(f_on.mean)} vs {fmt(f_off.mean)} (|Δ| = {fmt(abs(f_on.mean - f_off.mean), 3)}, "
            f"tolerance {fmt(C3_FIT_TOL * var, 3)}) {'✓' if fit_ok else '✗'}; {rec} {'✓' if rec_ok else '✗'}; "
            f"outside-hull {fmt(h_on.mean)} vs {fmt(h_off.mean)} {'✓' if out_ok else '✗'}"
        )
    if total == 0:
        return _claim("C3", st, "NOT EVALUATED", "", details)
    verdict: Verdict = "PASS" if all(v == total for v in held.values()) else "FAIL" if any(v == 0 for v in held.values()) else "PARTIAL"
    summary = "; ".join(f"{k}: {_where(t, v, total)}" for k, v in held.items())
    return _claim("C3", st, verdict, summary, details, numbers)


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def claim_c4(t: Table, nominal_tau: float | None, tau_key: str = "losses.separation.tau") -> Claim:
    st = "separation-only expulsion (outside-hull fraction) grows with τ and is near the baseline's at the nominal τ"
    if tau_key not in t.keys or "separation" not in t.masks:
        return _claim("C4", st, "NOT EVALUATED", "", [f"needs the separation-only mask and a grid over {tau_key} (configs/tau_sweep.yaml)"])
    ki = t.keys.index(tau_key)
    rest = [k for k in t.keys if k != tau_key]
    details: list[str] = []
    held, total = 0, 0
    numbers: dict[str, Any] = {}
    groups: dict[tuple[int, tuple[str, ...]], list[tuple[float, tuple[str, ...]]]] = {}
    for n, o in _cells(t):
        groups.setdefault((n, tuple(v for i, v in enumerate(o) if i != ki)), []).append((to_float(o[ki]), o))
    for (n, rest_vals), taus in groups.items():
        taus.sort()
        curve = [(tau, t.stats("outside_hull_frac", mask="separation", n=n, other=o).mean) for tau, o in taus]
        curve = [(a, b) for a, b in curve if not math.isnan(b)]
        if len(curve) < 3:
            continue
        rho = _spearman([a for a, _ in curve], [b for _, b in curve])
        grows = curve[-1][1] > curve[0][1] + EPS and rho >= C4_RHO_MIN
        base = Stats.of([v for _, o in taus for v in t.values("outside_hull_frac", mask="none", n=n, other=o)]) if "none" in t.masks else None
        lab = ", ".join(f"{k}={v}" for k, v in zip(rest, rest_vals))
        head = f"N={n}" + (f" ({lab})" if lab else "")
        details.append(
            f"{head}: separation-only outside-hull fraction by τ: " + ", ".join(f"{fmt(a, 3)}: {fmt(b, 3)}" for a, b in curve)
            + f"; Spearman ρ = {fmt(rho, 3)} (needs ≥ {C4_RHO_MIN}) {'✓' if grows else '✗'}"
        )
        nom = [(a, o) for (a, o) in taus if nominal_tau is not None and math.isclose(a, nominal_tau, rel_tol=1e-9)]
        near = False
        if base is None or base.count == 0 or not nom:
            details.append(f"{head}: nominal τ = {nominal_tau} is not in the grid, or no baseline (mask none) runs ✗")
        else:
            o_nom, o_max = nom[0][1], taus[-1][1]
            d_nom = t.stats("outside_hull_frac", mask="separation", n=n, other=o_nom).mean - base.mean
            d_max = t.stats("outside_hull_frac", mask="separation", n=n, other=o_max).mean - base.mean
            near = abs(d_nom) <= C4_NEAR_FRAC * abs(d_max) + EPS
            pair = _paired(t, "outside_hull_frac", "separation", "none", n, o_nom)
            details.append(
                f"{head}: at the nominal τ = {fmt(nominal_tau or math.nan, 3)}: separation-only {fmt(d_nom + base.mean, 3)} vs baseline "
                f"{fmt(base.mean, 3)}: excess {fmt(d_nom, 3)}" + (f" ({pair})" if pair else "")
                + f", vs {fmt(d_max, 3)} at τ = {fmt(taus[-1][0], 3)} (needs ≤ {C4_NEAR_FRAC:g} of it) {'✓' if near else '✗'}"
            )
        total += 2
        held += grows + near
        numbers[head] = {"tau": [a for a, _ in curve], "separation_outside_hull_frac": [b for _, b in curve], "spearman_rho": rho, "grows": bool(grows), "near_baseline": bool(near)}
    if total == 0:
        return _claim("C4", st, "NOT EVALUATED", "", ["needs at least 3 τ values"])
    return _claim("C4", st, _verdict(held, total), f"{held} of {total} checks hold", details, numbers)


def evaluate_claims(t: Table, *, target_var: Mapping[int, float], nominal_tau: float | None) -> list[Claim]:
    """C1-C4 of the study on a sweep's completed runs (claims a sweep cannot test: not evaluated);
    for image data also C1 by SSIM (``C1-SSIM``)."""
    images = any(r.get("recon_ssim") not in ("", None) for r in t.rows)
    c1 = [claim_c1(t), claim_c1(t, "recon_ssim")] if images else [claim_c1(t)]
    return [*c1, claim_c2(t), claim_c3(t, target_var), claim_c4(t, nominal_tau)]


def target_variance(results: StudyResults) -> dict[int, float]:
    """Mean target variance per N over the sweep's runs (the scale of "fits about as well")."""
    acc: dict[int, list[float]] = {}
    for x, y in results.data.values():
        acc.setdefault(int(x.shape[0]), []).append(float(np.var(y)))
    return {n: float(np.mean(v)) for n, v in acc.items()}


def nominal_tau(results: StudyResults) -> float | None:
    """``losses.separation.tau`` of the sweep's config, if separation is configured."""
    sep = (results.config.get("losses") or {}).get("separation")
    return float(sep["tau"]) if isinstance(sep, Mapping) and "tau" in sep else None


class Alba2026(Study):
    """The claims C1-C4 of "From Latent Space to Training Data: Explainable Specialization in
    Minimal MLPs" (Alba & López-Rubio, arXiv 2605.25939)."""

    name = "alba2026"
    description = "C1-C4 of Alba & López-Rubio (2026): coverage reconstructs best; repulsors without an attractor expel prototypes"
    notes = (
        "Verdicts: PASS where a claim holds at every N, PARTIAL at some, FAIL at none (C3: a part holds nowhere). "
        "Runs of different masks with the same seed share their data and initial prototypes, so differences are also "
        "given paired by seed (mean ± standard error). "
        f"Checks: C1 compares means per N (C1-SSIM, for images: the mean SSIM, higher is better); C2 requires a higher mean ratio wherever the baseline is below its maximum 1; "
        f"C3 pools the overlap-active and overlap-free masks per N, \"fit about as well\" = mean fit MSE within "
        f"{C3_FIT_TOL:g} x the target variance, reconstruction compared by mean (by median when a mean is non-finite); "
        f"C4 needs Spearman ρ ≥ {C4_RHO_MIN} between τ and the mean outside-hull fraction, the largest τ above the smallest, "
        f"and an excess of separation-only over the baseline at the nominal τ (`losses.separation.tau` of the config) of at most "
        f"{C4_NEAR_FRAC:g} x its excess at the largest τ."
    )

    def evaluate(self, results: StudyResults) -> list[Claim]:
        t = Table(results.rows, results.keys, results.masks)
        return evaluate_claims(t, target_var=target_variance(results), nominal_tau=nominal_tau(results))


@hookimpl
def protoreg_register_studies(register: Callable[[Study], None]) -> None:
    register(Alba2026())
