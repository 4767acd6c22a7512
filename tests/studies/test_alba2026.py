"""The built-in study ``alba2026``: the claims C1-C4 on synthetic results."""

from __future__ import annotations

from protoreg.studies import alba2026
from protoreg.sweeps.table import Table


def _rows(spec: dict[tuple[str, int, str], dict[str, float]], seeds: int = 3) -> list[dict[str, str]]:
    """Synthetic completed rows: (mask, n, tau) -> metric values (seed adds a tiny jitter)."""
    rows = []
    for (mask, n, tau), metrics in spec.items():
        for s in range(seeds):
            row = {"run": f"{mask}-{n}-{tau}-{s}", "mask": mask, "n": str(n), "seed": str(s), "status": "completed", "losses.separation.tau": tau}
            row.update({k: repr(v + 1e-4 * s) for k, v in metrics.items()})
            rows.append(row)
    return rows


def test_claim_checks_on_synthetic_results() -> None:
    base = {"fit_mse": 0.01, "recon_error": 0.10, "specialization_ratio": 0.5, "outside_hull_frac": 0.0}
    spec = {}
    for n in (5, 20):
        spec[("none", n, "0.1")] = dict(base)
        spec[("coverage", n, "0.1")] = dict(base, recon_error=0.05, specialization_ratio=0.7)
        spec[("overlap", n, "0.1")] = dict(base, recon_error=0.2, outside_hull_frac=0.3)
        spec[("coverage+overlap", n, "0.1")] = dict(base, recon_error=0.08, outside_hull_frac=0.1)
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    var = {5: 1 / 12, 20: 1 / 12}
    c1, c2, c3, c4 = alba2026.evaluate_claims(t, target_var=var, nominal_tau=0.1)
    assert (c1.verdict, c2.verdict, c3.verdict, c4.verdict) == ("PASS", "PASS", "PASS", "NOT EVALUATED")
    # coverage+overlap reconstructs best at N=20 only: C1 partial; equal specialization: C2 fails there
    spec[("coverage+overlap", 20, "0.1")]["recon_error"] = 0.01
    spec[("coverage", 5, "0.1")]["specialization_ratio"] = 0.5
    spec[("coverage", 20, "0.1")]["specialization_ratio"] = 0.5
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    c1, c2, c3, _ = alba2026.evaluate_claims(t, target_var=var, nominal_tau=0.1)
    assert c1.verdict == "PARTIAL" and "holds at 1 of 2 N" in c1.summary
    assert c2.verdict == "FAIL" and "✗ (equal)" in c2.details[0]
    # a much worse fit of the overlap-active masks breaks "fit about as well"
    spec[("overlap", 5, "0.1")]["fit_mse"] = 0.5
    t = Table(_rows(spec), ["data.n"], ["none", "coverage", "overlap", "coverage+overlap"])
    assert alba2026.claim_c3(t, var).verdict == "PARTIAL"
    # C4: separation-only expulsion over a tau grid
    taus = ["0.01", "0.1", "1.0", "10.0"]
    spec = {("none", 100, tau): dict(base, outside_hull_frac=0.01) for tau in taus}
    spec.update({("separation", 100, tau): dict(base, outside_hull_frac=f) for tau, f in zip(taus, (0.0, 0.02, 0.2, 0.5))})
    t = Table(_rows(spec), ["losses.separation.tau"], ["none", "separation"])
    assert alba2026.claim_c4(t, 0.1).verdict == "PASS"
    assert alba2026.claim_c4(t, 1.0).verdict == "PARTIAL"  # 0.2 is not near the baseline's 0.01
    spec.update({("separation", 100, tau): dict(base, outside_hull_frac=f) for tau, f in zip(taus, (0.5, 0.2, 0.02, 0.0))})
    t = Table(_rows(spec), ["losses.separation.tau"], ["none", "separation"])
    assert alba2026.claim_c4(t, 0.1).verdict == "FAIL"  # decreasing, and far from the baseline at tau=0.1
