"""The sweep's report: ``summary.md`` (grid, the study's claims, results per cell, failures,
pairing, plots), the study's evaluation and one expulsion warning for the whole sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, cast

import numpy as np

from omegaconf import OmegaConf

from protoreg.plugin_api import Claim, Study, StudyResults
from protoreg.frontend.caller import warn
from protoreg.errors import ExpulsionWarning, PluginError
from protoreg.evaluation.evaluate import COUNT_METRICS, IMAGE_METRIC_NAMES, METRIC_NAMES
from protoreg.rundirs.io import atomic_write_text
from protoreg.plugins.registry import Registry
from protoreg.sweeps.grid import format_value, mask_subsets, sweep_seeds
from protoreg.sweeps.plan import Plan, pairing_line
from protoreg.sweeps.plots import write_plots
from protoreg.sweeps.store import CLAIMS, RESULTS, SUMMARY, read_results
from protoreg.sweeps.table import Table, fmt, pm, to_float
from protoreg.rundirs.status import finished

#: Columns of ``results.csv`` read as integers by :func:`parse_row`.
INT_COLUMNS: tuple[str, ...] = ("n", "seed", "steps", "batch", *COUNT_METRICS)


def parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    """A ``results.csv`` row with numbers parsed: metrics and ``seconds`` as floats, counts as
    ints, image metrics as floats or None (not images), everything else (names, swept values,
    status, reason) as written."""
    out: dict[str, Any] = dict(row)
    for key in IMAGE_METRIC_NAMES:
        if key in out:
            out[key] = to_float(out[key]) if out[key] not in ("", None) else None
    for key in (*METRIC_NAMES, "seconds"):
        if key in out and key not in COUNT_METRICS:
            out[key] = to_float(out[key])
    for key in INT_COLUMNS:
        if key in out and str(out[key]).lstrip("-").isdigit():
            out[key] = int(out[key])
    return out


def study_results(plan: Plan, rows: Sequence[Mapping[str, str]]) -> StudyResults:
    """What a study sees of the sweep (see :class:`protoreg.StudyResults`)."""
    config = OmegaConf.to_container(plan.base, resolve=True)
    assert isinstance(config, dict)
    return StudyResults(
        rows=[parse_row(r) for r in rows],
        keys=list(plan.keys),
        masks=plan.mask_order(),
        config=cast(dict[str, Any], config),  # a config's keys are strings
        data={name: (s.x, s.y) for name, s in plan.specs.items()},
    )


def evaluate_study(study: Study, source: str, results: StudyResults) -> list[Claim]:
    """The study's claims; a study that raises or returns something else is named in a PluginError."""
    who = f"study {study.name!r} ({source})"
    try:
        returned = study.evaluate(results)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported by name
        raise PluginError(f"{who}: evaluate() raised {type(exc).__name__}: {exc}") from exc
    if isinstance(returned, (str, bytes, Mapping)) or not isinstance(returned, Iterable):
        raise PluginError(f"{who}: evaluate() returned a {type(returned).__name__}, expected a list of protoreg.Claim objects")
    claims = list(returned)
    bad = [c for c in claims if not isinstance(c, Claim)]
    if bad:
        raise PluginError(f"{who}: evaluate() returned a list holding {type(bad[0]).__name__}, expected protoreg.Claim objects")
    return [_json_numbers(who, c) for c in claims]


def _json_numbers(who: str, claim: Claim) -> Claim:
    """``claim`` with numpy scalars in its ``numbers`` made plain Python numbers; anything else
    that is not a JSON value (an array, an object) is refused naming the claim and the key."""
    import dataclasses

    def plain(key: str, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.generic) and isinstance(v.item(), (bool, int, float, str)):
            return v.item()
        if isinstance(v, (list, tuple)):
            return [plain(key, x) for x in v]
        if isinstance(v, Mapping) and all(isinstance(k, str) for k in v):
            return {k: plain(f"{key}.{k}", x) for k, x in v.items()}
        hint = " (use .tolist())" if isinstance(v, np.ndarray) else ""
        raise PluginError(
            f"{who}: claim {claim.id!r}: numbers[{key!r}] is a {type(v).__name__}, not a JSON value "
            f"(a number, string, bool, null, or a list or str-keyed mapping of them){hint}"
        )

    if not isinstance(claim.numbers, Mapping):
        raise PluginError(f"{who}: claim {claim.id!r}: numbers is a {type(claim.numbers).__name__}, expected a mapping of name -> number")
    return dataclasses.replace(claim, numbers={str(k): plain(str(k), v) for k, v in claim.numbers.items()})


def expulsion_warning(plan: Plan, rows: Sequence[Mapping[str, str]]) -> None:
    """One warning for all runs that ended with prototypes outside the hull (``geometry.on_expulsion=warn``)."""
    g = plan.base.geometry
    if str(g.on_expulsion) != "warn":
        return
    over = [r for r in rows if r.get("status") == "completed" and to_float(r["outside_hull_frac"]) > float(g.max_outside_frac)]
    if not over:
        return
    counts: dict[str, int] = {}
    for r in over:
        counts[r["mask"]] = counts.get(r["mask"], 0) + 1
    masks = ", ".join(f"{m} ({k})" for m, k in sorted(counts.items(), key=lambda kv: -kv[1]))
    warn(
        f"{len(over)} of {len(rows)} runs ended with prototypes outside the convex hull of their data, by mask: {masks} "
        f"(outside_hull_frac in {RESULTS})",
        ExpulsionWarning,
    )


def _header(plan: Plan, rows: Sequence[Mapping[str, str]]) -> list[str]:
    done = [r for r in rows if finished(r.get("status"))]
    failed = [r for r in done if r.get("status") == "failed"]
    secs = sum(to_float(r["seconds"]) for r in done)
    batches = len({r["batch"] for r in done})
    b = plan.base
    lines = [
        "# Sweep summary",
        "",
        f"{len(done)} of {len(plan.runs)} runs finished ({len(failed)} failed) in {batches} batch(es); "
        f"training time {secs:.1f} s (the `seconds` column is each batch's wall-clock time shared by its runs).",
        "",
        f"Grid: masks over {', '.join(plan.masks) or '(none)'} ({len(mask_subsets(plan.masks))} masks)"
        + "".join(f"; `{k}` = {', '.join(format_value(v) for v in cast(dict[str, list[Any]], OmegaConf.to_container(b.sweep.grid))[k])}" for k in plan.keys)
        + f"; seeds {', '.join(str(s) for s in sweep_seeds(b.sweep.seeds))}. "
        f"Training: {b.train.steps} steps, Adam lr {b.train.lr}, precision {b.trainer.get('precision', '32-true')}. "
        "Loss settings: "
        + "; ".join(f"{name} " + ", ".join(f"{k}={format_value(v)}" for k, v in s.items()) for name, s in cast(dict[str, dict[str, Any]], OmegaConf.to_container(b.losses)).items())
        + " (an 'on' loss of a mask has this weight, an 'off' one weight 0).",
    ]
    if plan.twins:
        lines += [
            "",
            f"{len(plan.twins)} runs have the same effective settings as another run (an inactive loss's parameters do not "
            "matter); each was trained once and the result is listed under every name.",
        ]
    if len(done) < len(plan.runs):
        lines += ["", f"**Partial**: {len(plan.runs) - len(done)} runs are not finished; re-run the same command to resume."]
    return lines


def _claims_section(study: Study, claims: Sequence[Claim]) -> list[str]:
    lines = ["", "## Claims", "", f"Study `{study.name}`: {study.description}", ""]
    for c in claims:
        lines.append(f"- **{c.id} — {c.verdict}**: {c.statement}" + (f" — {c.summary}." if c.summary else "."))
        lines += [f"  - {d}" for d in c.details]
    if study.notes:
        lines += ["", study.notes]
    return lines


def _results_table(t: Table, rows: Sequence[Mapping[str, str]]) -> list[str]:
    lines = [
        "",
        "## Results per N × mask",
        "",
        "Mean ± standard deviation over seeds (completed runs); `recon_error` also as the median, which "
        "non-finite prototypes cannot dominate.",
        "",
    ]
    images = any(r.get("recon_ssim") not in ("", None) for r in rows)
    head = ["N", "mask", *[f"`{k}`" for k in t.keys], "runs", "fit_mse", "recon_error", "recon_error median", *(["recon_ssim"] if images else []), "specialization_ratio", "outside_hull_frac", "failed"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for o in t.others():
        for n in t.ns:
            for m in t.masks:
                if not any(r["mask"] == m and int(r["n"]) == n and t.other(r) == o for r in rows):
                    continue
                rec = t.stats("recon_error", mask=m, n=n, other=o)
                cells = [
                    str(n),
                    m,
                    *o,
                    str(rec.count),
                    pm(t.stats("fit_mse", mask=m, n=n, other=o)),
                    pm(rec) + (f" ({rec.nonfinite} non-finite)" if rec.nonfinite else ""),
                    fmt(rec.median),
                    *([pm(t.stats("recon_ssim", mask=m, n=n, other=o))] if images else []),
                    pm(t.stats("specialization_ratio", mask=m, n=n, other=o)),
                    pm(t.stats("outside_hull_frac", mask=m, n=n, other=o)),
                    str(t.failed_count(mask=m, n=n, other=o)),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_markdown(
    plan: Plan, rows: Sequence[Mapping[str, str]], plots: Sequence[str], study: Study | None = None, claims: Sequence[Claim] = ()
) -> str:
    """``summary.md``: the grid, the study's claims (only when a study is named), mean ± std per
    cell, failed runs, pairing, plots."""
    t = Table(rows, plan.keys, plan.mask_order())
    lines = _header(plan, rows)
    if study is not None:
        lines += _claims_section(study, claims)
    lines += _results_table(t, rows)
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- `{r['run']}`: {r['reason']}" for r in failed[:50]]
        if len(failed) > 50:
            lines.append(f"- ... and {len(failed) - 50} more (results.csv)")
    if plan.unpaired:
        lines += ["", "## Pairing", "", pairing_line(plan) or ""]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    files = "`results.csv` (one row per run), `prototypes.csv` (every run's prototypes), `sweep.yaml` (the config)"
    if study is not None:
        files += ", `claims.json` (the study's claims)"
    lines += ["", f"Files: {files}, `tb/` (TensorBoard: one folder per batch, HParams per run).", ""]
    return "\n".join(lines)


def write_report(out: Path | str, *, plan: Plan, reg: Registry, plots: bool = True) -> list[Claim]:
    """``summary.md``, the plots and (with a study) ``claims.json`` of a sweep directory, from its
    ``results.csv`` and ``prototypes.csv``. Returns the study's claims ([] without a study)."""
    out = Path(out)
    rows = read_results(out)
    study, source = reg.studies[plan.study] if plan.study is not None else (None, "")
    results = study_results(plan, rows) if study is not None else None
    claims = evaluate_study(study, source, results) if study is not None and results is not None else []
    if study is not None:  # the claims are kept whatever the plots do
        atomic_write_text(out / CLAIMS, json.dumps({"study": study.name, "claims": [c.as_dict() for c in claims]}, indent=2) + "\n")
    made: list[str] = []
    failure: PluginError | None = None
    if plots and any(r.get("status") == "completed" for r in rows):
        made = write_plots(out, plan, Table(rows, plan.keys, plan.mask_order()))
        if study is not None and results is not None:
            try:
                extra = study.plots(results, out)
                if isinstance(extra, (str, bytes)) or not isinstance(extra, Iterable):
                    raise TypeError(f"returned a {type(extra).__name__}, expected a list of file names")
                made += [str(p) for p in extra]
            except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported by name after the summary is written
                failure = PluginError(
                    f"study {study.name!r} ({source}): plots() failed ({type(exc).__name__}: {exc}); "
                    f"its claims are in {out / CLAIMS} and {out / SUMMARY}"
                )
    atomic_write_text(out / SUMMARY, summary_markdown(plan, rows, made, study, claims))
    if failure is not None:
        raise failure
    return claims
