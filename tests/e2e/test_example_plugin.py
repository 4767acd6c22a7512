"""The example third-party plugin ``plugins/protoreg-anchor``, loaded through its entry point.

Skipped unless the distribution is installed: ``pip install -e plugins/protoreg-anchor``.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import protoreg
from protoreg.config import active_losses, load_config, loss_settings
from protoreg.errors import ConfigError
from protoreg.plugins.pairing import PairingWarning, check_active
from protoreg.plugins.registry import DISABLE_AUTOLOAD_ENV, Registry, collect_losses, get_plugin_manager
from protoreg.training import build_group, run_spec

DIST = "protoreg-anchor"


def _anchor_entry_point() -> importlib.metadata.EntryPoint | None:
    for ep in importlib.metadata.entry_points(group="protoreg"):
        if ep.name == "anchor" and ep.value == "protoreg_anchor":
            return ep
    return None


if _anchor_entry_point() is None:
    pytest.skip(f"{DIST} is not installed (pip install -e plugins/{DIST})", allow_module_level=True)
protoreg_anchor = pytest.importorskip("protoreg_anchor")
SOURCE = f"{DIST} {importlib.metadata.version(DIST)}"


@pytest.fixture(autouse=True)
def _autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv("PROTOREG_STRICT_PLUGINS", raising=False)


def _ctx(x: torch.Tensor, prototypes: torch.Tensor) -> protoreg.LossContext:
    """A context for R runs with inputs ``x`` (R,N,d) and ``prototypes`` (R,M,d)."""
    r, n, d = x.shape
    m = prototypes.shape[1]
    extent = (x.amax(1) - x.amin(1)).mean(-1)
    return protoreg.LossContext(
        x=x,
        y=torch.zeros(r, n, 1, dtype=x.dtype),
        hidden=torch.zeros(r, n, m, dtype=x.dtype),
        pred=torch.zeros(r, n, 1, dtype=x.dtype),
        prototypes=prototypes,
        spacing=extent / n ** (1.0 / d),
        model=torch.nn.Module(),
    )


# --------------------------------------------------------------- discovery
def test_entry_point_loads_into_the_plugin_manager() -> None:
    pm = get_plugin_manager()
    assert pm.is_registered(protoreg_anchor)
    assert pm.get_name(protoreg_anchor) == f"anchor ({SOURCE})"
    assert get_plugin_manager(autoload=False).is_registered(protoreg_anchor) is False


def test_disable_autoload_env_hides_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    losses = collect_losses(get_plugin_manager())
    assert "anchor" not in losses and "spread" not in losses
    assert "coverage" in losses


def test_collect_losses_shows_role_pairing_and_source() -> None:
    losses = collect_losses(get_plugin_manager())
    anchor, spread = losses["anchor"], losses["spread"]
    assert (anchor.loss.role, anchor.loss.pairs_with, anchor.source) == ("attractor", (), SOURCE)
    assert (spread.loss.role, spread.loss.pairs_with, spread.source) == ("repulsor", ("anchor",), SOURCE)
    assert anchor.loss.vectorized is True and spread.loss.vectorized is False
    assert dict(anchor.loss.defaults) == {"tau": 0.1} and dict(spread.loss.defaults) == {"tau": 1.0}
    assert losses["coverage"].source != SOURCE


# ------------------------------------------------------------------ values
def test_values_match_a_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 7, 2))
    p = rng.random((2, 5, 2)) * 1.6 - 0.3
    ctx = _ctx(torch.tensor(x), torch.tensor(p))
    tau = np.array([0.1, 2.0])
    got_anchor = protoreg_anchor.Anchor()(ctx, tau=torch.tensor(tau)).numpy()
    got_spread = protoreg_anchor.Spread()(ctx, tau=0.5).numpy()
    for r in range(2):
        s = (x[r].max(0) - x[r].min(0)).mean() / math.sqrt(7)
        t = tau[r] * s**2
        d2 = ((p[r][:, None, :] - x[r][None, :, :]) ** 2).sum(-1)  # (M,N)
        soft_min = -t * np.log(np.exp(-d2 / t).mean(axis=1))
        assert got_anchor[r] == pytest.approx(soft_min.mean() / s**2, rel=1e-9)
        c2 = ((p[r] - p[r].mean(0)) ** 2).sum(-1)
        assert got_spread[r] == pytest.approx(-np.log1p(c2 / (0.5 * s**2)).mean(), rel=1e-9)
    assert (got_anchor >= 0).all() and (got_spread <= 0).all()


def test_module_calls_vectorized_and_plain_paths_per_run() -> None:
    """Two runs with different taus: anchor gets (R,) tensors, spread plain floats per group."""
    reg = Registry.load()
    base = ["data.n=12", "losses.anchor.weight=0.1", "losses.spread.weight=0.01", "trainer.accelerator=cpu"]
    cfgs = [load_config(None, base + [f"losses.anchor.tau={a}", f"losses.spread.tau={s}"]) for a, s in ((0.1, 0.5), (3.0, 2.0))]
    module = build_group([run_spec(c, reg) for c in cfgs], reg).module
    with torch.no_grad():
        _, values, hidden, pred, protos = module.objective(module.x, module.y)
    assert values["anchor"].shape == values["spread"].shape == (2,)
    ctx = protoreg.LossContext(module.x, module.y, hidden, pred, protos, module.spacing, module.model)
    for r, (a, s) in enumerate(((0.1, 0.5), (3.0, 2.0))):
        one = ctx.select(torch.tensor([r]))
        with torch.no_grad():
            alone_anchor = float(protoreg_anchor.Anchor()(one, tau=a)[0])
            alone_spread = float(protoreg_anchor.Spread()(one, tau=s)[0])
        assert float(values["anchor"][r]) == pytest.approx(alone_anchor, rel=1e-5)
        assert float(values["spread"][r]) == pytest.approx(alone_spread, rel=1e-5)
    assert float(values["spread"][0]) != pytest.approx(float(values["spread"][1]), rel=1e-3)


# --------------------------------------------------------------- gradients
def test_anchor_pulls_each_prototype_toward_its_nearest_sample() -> None:
    x = torch.arange(10, dtype=torch.float64).reshape(1, 10, 1)  # samples 0..9
    start = torch.tensor([[[3.4], [6.8], [-2.5], [12.0]]], dtype=torch.float64)
    p = start.clone().requires_grad_(True)
    protoreg_anchor.Anchor()(_ctx(x, p), tau=torch.tensor([0.1])).sum().backward()
    grad = p.grad[0, :, 0]
    assert grad[0] > 0 and grad[1] < 0 and grad[2] < 0 and grad[3] > 0  # toward 3, 7, 0, 9
    nearest = lambda q: (q - x[0, :, 0].unsqueeze(0)).abs().amin(-1)  # noqa: E731
    before = nearest(start[0])
    after = nearest((start - 0.01 * p.grad)[0].detach())
    assert bool((after < before).all()), (before, after)
    # the pull on a far prototype does not vanish (unlike a soft-min over prototypes)
    assert abs(float(grad[3])) > 0.1 * abs(float(grad[0]))


def test_spread_pushes_prototypes_away_from_their_centroid() -> None:
    x = torch.linspace(0, 1, 10, dtype=torch.float64).reshape(1, 10, 1)
    start = torch.tensor([[[0.3], [0.45], [0.5], [0.55], [0.7]]], dtype=torch.float64)
    p = start.clone().requires_grad_(True)
    protoreg_anchor.Spread()(_ctx(x, p), tau=1.0).sum().backward()
    moved = (start - 0.01 * p.grad).detach()
    c = start.mean(1, keepdim=True)
    dist_before = (start - c).abs()[0, :, 0]
    dist_after = (moved - moved.mean(1, keepdim=True)).abs()[0, :, 0]
    assert bool((dist_after[[0, 1, 3, 4]] > dist_before[[0, 1, 3, 4]]).all()), (dist_before, dist_after)
    assert float(p.grad[0, 0, 0]) > 0 and float(p.grad[0, -1, 0]) < 0  # outermost move outward
    # asymmetric 2-D cloud: the mean squared distance to the centroid grows
    g = torch.Generator().manual_seed(1)
    q0 = torch.rand(1, 8, 2, generator=g, dtype=torch.float64)
    q = q0.clone().requires_grad_(True)
    protoreg_anchor.Spread()(_ctx(torch.rand(1, 16, 2, generator=g, dtype=torch.float64), q), tau=1.0).sum().backward()
    msd = lambda z: (z - z.mean(1, keepdim=True)).pow(2).sum(-1).mean()  # noqa: E731
    assert float(msd((q0 - 0.01 * q.grad).detach())) > float(msd(q0))


# ----------------------------------------------------------------- pairing
def _check(cfg, *, strict: bool):  # type: ignore[no-untyped-def]
    reg = Registry.load()
    return check_active(active_losses(loss_settings(cfg, reg.losses)), reg.losses, strict=strict)


def _prepare(*overrides: str) -> list[str]:
    cfg = load_config(None, ["losses.coverage.weight=0", "trainer.accelerator=cpu", *overrides])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = [p.message() for p in _check(cfg, strict=False)]
    pairing = [str(w.message) for w in caught if issubclass(w.category, PairingWarning)]
    assert pairing == problems
    return problems


def test_spread_alone_warns_no_compatible_attractor() -> None:
    (msg,) = _prepare("losses.spread.weight=0.01")
    assert "'spread'" in msg and "no compatible attractor" in msg
    assert SOURCE in msg and "'anchor'" in msg
    # coverage is an attractor, but not one spread pairs with
    assert len(_prepare("losses.spread.weight=0.01", "losses.coverage.weight=0.1")) == 1


def test_spread_with_anchor_does_not_warn() -> None:
    assert _prepare("losses.spread.weight=0.01", "losses.anchor.weight=0.1") == []
    # an anchor switched off does not count
    assert len(_prepare("losses.spread.weight=0.01", "losses.anchor.weight=0")) == 1


def test_strict_pairing_makes_spread_alone_an_error() -> None:
    cfg = load_config(None, ["losses.coverage.weight=0", "losses.spread.weight=0.01", "pairing.strict=true"])
    with pytest.raises(ConfigError, match="no compatible attractor"):
        _check(cfg, strict=bool(cfg.pairing.strict))


# -------------------------------------------------------------- end to end
@pytest.mark.slow
def test_fit_end_to_end_with_both_losses(tmp_path, capsys) -> None:
    from protoreg.frontend.cli import main

    out = tmp_path / "run"
    argv = ["fit", "--out", str(out), "data.n=10", "train.steps=60", "losses.anchor.weight=0.1",
            "losses.spread.weight=0.01", "trainer.accelerator=cpu"]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no compatible attractor" not in captured.err
    assert "anchor+spread" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 60
    assert metrics["losses"]["anchor"] == {"weight": 0.1, "tau": 0.1}
    assert metrics["losses"]["spread"] == {"weight": 0.01, "tau": 1.0}


# ------------------------------------------------------------------ study
ANCHOR_SWEEP = Path(protoreg_anchor.__file__).resolve().parents[1] / "configs" / "anchor_sweep.yaml"
ANCHOR_FAST = ["train.steps=40", "train.log_every_n_steps=10", "geometry.every_n_steps=20", "sweep.grid={data.n: [8]}", "sweep.seeds=1"]


def test_the_plugin_registers_its_study(capsys: pytest.CaptureFixture[str]) -> None:
    from protoreg.frontend.cli import main

    assert main(["plugins"]) == 0
    studies = capsys.readouterr().out.split("studies:")[1]
    assert "anchor_inside" in studies and SOURCE in studies and "alba2026" in studies


@pytest.mark.slow
def test_a_sweep_over_the_plugin_losses_has_claims_only_with_its_study(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = protoreg.sweep(*ANCHOR_FAST, config=ANCHOR_SWEEP, out=tmp_path / "plain", plots=False)
        studied = protoreg.sweep(*ANCHOR_FAST, "sweep.study=anchor_inside", config=ANCHOR_SWEEP, out=tmp_path / "studied", plots=False)
    assert plain.claims == [] and "## Claims" not in (plain.dir / "summary.md").read_text()
    assert "C1" not in (plain.dir / "summary.md").read_text()
    assert [c.id for c in studied.claims] == ["A1", "A2"]
    anchored = [r for r in studied.rows if "anchor" in r["mask"].split("+")]
    a1 = studied.claims[0]
    assert a1.numbers["runs"] == len(anchored) == 2
    assert a1.numbers["inside"] == sum(r["outside_hull_frac"] == 0.0 for r in anchored)
    assert "**A1 — " in (studied.dir / "summary.md").read_text()
