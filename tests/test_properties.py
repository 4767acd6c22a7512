"""Random keys, values and arrays: every outcome is a result or a clean ProtoregError."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from protoreg import geometry
from protoreg.config import load_config, validate
from protoreg.datasets.files import File
from protoreg.datasets.rules import validate_arrays

file_dataset = File().load
from protoreg.errors import ProtoregError
from helpers import specialization_ratio
from protoreg.evaluation.matching import recon_error
from helpers import builtin_registries

REAL_KEYS = [
    "data.n", "data.dim", "data.low", "data.high", "data.target", "data.path", "data.seed", "data.name",
    "model.width", "model.parameterization", "model.init", "model.init_width",
    "train.steps", "train.lr", "train.seed", "train.batch_size", "train.log_every_n_steps",
    "losses.coverage.weight", "losses.coverage.tau", "losses.separation.tau", "losses.overlap.weight",
    "geometry.on_expulsion", "geometry.every_n_steps", "geometry.max_outside_frac", "pairing.strict",
    "trainer.accelerator", "trainer.precision", "sweep.seeds",
]
VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "false", "abc", "[1, 2]", "{a: 1}", "''", "1e400", "-0", "nan", "inf", "${data.n}", "${nope}", "0x10"]),
)
KEYS = st.one_of(st.sampled_from(REAL_KEYS), st.from_regex(r"[a-z]{1,6}(\.[a-z_]{1,6}){0,2}", fullmatch=True))



@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), max_size=4))
def test_config_loader_never_crashes(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
        validate(cfg, *builtin_registries())
    except ProtoregError as exc:
        assert str(exc) and "\n" not in str(exc)


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1e6, -1e6, 1e-300, 1e300, 5.0]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays(np.float64, st.tuples(st.integers(0, 6), st.integers(1, 4)), elements=FLOATS), st.sampled_from([".csv", ".npy"]))
def test_data_loader_never_crashes(tmp_path_factory, table, suffix):
    path = tmp_path_factory.mktemp("d") / f"d{suffix}"
    if suffix == ".npy":
        np.save(path, table)
    else:
        header = ",".join(f"c{i}" for i in range(table.shape[1]))
        path.write_text(header + "\n" + "".join(",".join(repr(v) for v in row) + "\n" for row in table))
    cfg = {"path": str(path), "targets": None}
    try:
        x, y = validate_arrays(*file_dataset(cfg, 0), str(path))
    except ProtoregError as exc:
        assert path.name in str(exc)
    else:
        assert np.isfinite(x).all() and np.isfinite(y).all() and len(x) >= 2


POINTS = st.integers(1, 7).flatmap(
    lambda n: st.integers(1, 3).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, (n, d), elements=st.floats(-1e6, 1e6)),
            arrays(np.float64, (5, d), elements=FLOATS),
        )
    )
)


@settings(max_examples=80, deadline=None)
@given(POINTS, st.sampled_from(["plain", "constant", "duplicated", "tiny"]))
def test_metrics_and_geometry_never_crash(pair, kind):
    x, p = pair
    if kind == "constant":
        x = np.full_like(x, x.flat[0])
    elif kind == "duplicated":
        x = np.concatenate([x, x])
    elif kind == "tiny":
        x = x * 1e-9
    xt, pt = torch.tensor(x[None]), torch.tensor(p[None])
    err = recon_error(pt, xt)
    assert err.shape == (1,) and not math.isnan(float(err))
    dist = geometry.hull_distance(pt, xt)
    assert dist.shape == (1, 5) and not torch.isnan(dist).any()
    finite = torch.isfinite(pt).all(-1)
    assert torch.isinf(dist[~finite]).all()
    out = geometry.outside_hull(pt, xt)
    assert bool(out[~finite].all())
    hidden = torch.rand(1, x.shape[0], 5, dtype=torch.float64)
    assert 0 < float(specialization_ratio(hidden)[0]) <= 1


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 5), st.integers(0, 10**6))
def test_convex_combinations_are_inside(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * 10 ** rng.uniform(-3, 3)
    w = rng.dirichlet(np.ones(n), size=4)
    p = w @ x
    dist = geometry.hull_distance(torch.tensor(p[None]), torch.tensor(x[None]))
    extent = float(np.ptp(x, axis=0).max()) or 1.0
    assert float(dist.max()) <= 1e-5 * extent
    assert not geometry.outside_hull(torch.tensor(p[None]), torch.tensor(x[None])).any()


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(1, 3), st.integers(0, 10**6), st.randoms())
def test_metrics_invariant_to_permuting_units_and_samples(n, d, seed, rnd):
    rng = np.random.default_rng(seed)
    x, p = rng.normal(size=(n, d)), rng.normal(size=(n + 1, d))
    base_r = float(recon_error(torch.tensor(p[None]), torch.tensor(x[None]))[0])
    base_h = geometry.hull_distance(torch.tensor(p[None]), torch.tensor(x[None]))[0].numpy()
    pi, xi = list(range(n + 1)), list(range(n))
    rnd.shuffle(pi)
    rnd.shuffle(xi)
    r = float(recon_error(torch.tensor(p[pi][None]), torch.tensor(x[xi][None]))[0])
    h = geometry.hull_distance(torch.tensor(p[pi][None]), torch.tensor(x[xi][None]))[0].numpy()
    assert r == pytest.approx(base_r, rel=1e-9)
    np.testing.assert_allclose(h, base_h[pi], rtol=1e-5, atol=1e-7)
