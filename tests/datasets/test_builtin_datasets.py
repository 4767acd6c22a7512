from __future__ import annotations

import numpy as np
import pytest

from protoreg.datasets.files import File
from protoreg.datasets.rules import validate_arrays
from protoreg.datasets.uniform import Uniform

file_dataset, uniform_dataset = File().load, Uniform().load
from protoreg.errors import DataError


def cfg(**kw):
    base = {"name": "uniform", "n": 10, "dim": 1, "low": 0.0, "high": 1.0, "target": "random", "path": None, "targets": None, "seed": None}
    base.update(kw)
    return base


def test_uniform_is_seeded_and_in_range():
    x1, y1 = uniform_dataset(cfg(n=50, dim=3, low=-2, high=3), 4)
    x2, _ = uniform_dataset(cfg(n=50, dim=3, low=-2, high=3), 4)
    x3, _ = uniform_dataset(cfg(n=50, dim=3, low=-2, high=3), 5)
    assert x1.shape == (50, 3) and y1.shape == (50, 1)
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert x1.min() >= -2 and x1.max() <= 3
    xs, ys = uniform_dataset(cfg(target="sin"), 0)
    np.testing.assert_allclose(ys[:, 0], np.sin(2 * np.pi * xs[:, 0]))


def test_csv_last_column_and_named_targets(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,t\n0,1,2\n3,4,5\n6,7,8\n")
    x, y = file_dataset(cfg(path=str(f)), 0)
    np.testing.assert_array_equal(x, [[0, 1], [3, 4], [6, 7]])
    np.testing.assert_array_equal(y, [[2], [5], [8]])
    x, y = file_dataset(cfg(path=str(f), targets=["a", "t"]), 0)
    np.testing.assert_array_equal(x, [[1], [4], [7]])
    np.testing.assert_array_equal(y, [[0, 2], [3, 5], [6, 8]])


def test_npy_and_npz(tmp_path):
    a = np.arange(12, dtype=float).reshape(4, 3)
    np.save(tmp_path / "d.npy", a)
    x, y = file_dataset(cfg(path=str(tmp_path / "d.npy")), 0)
    np.testing.assert_array_equal(y[:, 0], a[:, 2])
    np.savez(tmp_path / "d.npz", x=a[:, :2], y=a[:, 2])
    x, y = file_dataset(cfg(path=str(tmp_path / "d.npz")), 0)
    np.testing.assert_array_equal(x, a[:, :2])
    assert y.shape == (4, 1)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "empty file"),
        ("a,b\n", "no data rows"),
        ("a,b\n1,2\n3\n", "ragged"),
        ("a,b\n1,2\n3,x\n", "non-numeric cell 'x'"),
        ("a,b\n1,2\n3,nan\n", "NaN/inf"),
        ("a,b\n1,inf\n3,4\n", "NaN/inf"),
        ("a,b\n1,2\n", "too few points"),
        ("a\n1\n2\n", "at least 2 columns"),
    ],
)
def test_bad_csv_names_the_file(tmp_path, content, needle):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError) as ei:
        x, y = file_dataset(cfg(path=str(f)), 0)
        validate_arrays(x, y, str(f))
    assert needle in str(ei.value) and "bad.csv" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        file_dataset(cfg(path=str(tmp_path / "nope.csv")), 0)
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="x.npy"):
        file_dataset(cfg(path=str(tmp_path / "x.npy")), 0)
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="s.npy"):
        file_dataset(cfg(path=str(tmp_path / "s.npy")), 0)
    f = tmp_path / "d.csv"
    f.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="'zz'"):
        file_dataset(cfg(path=str(f), targets=["zz"]), 0)


# ------------------------------------------------------------------ built-in sets (no download)

from protoreg.config import load_config, validate  # noqa: E402
from protoreg.datasets._labelled import stratified_counts  # noqa: E402
from protoreg.datasets.blobs import Blobs  # noqa: E402
from protoreg.datasets.circles import Circles  # noqa: E402
from protoreg.datasets.digits import DIGITS_CLASS_COUNTS, Digits  # noqa: E402
from protoreg.datasets.moons import Moons  # noqa: E402
from protoreg.datasets.rules import validate_loaded  # noqa: E402

digits_dataset, moons_dataset, circles_dataset, blobs_dataset = Digits().load, Moons().load, Circles().load, Blobs().load
from protoreg.errors import ConfigError  # noqa: E402
from helpers import builtin_registries  # noqa: E402



def dcfg(**kw):
    return cfg(**{"name": "digits", "n": None, "target": None, "classes": None, "noise": None, **kw})


def test_digits_all_images_in_unit_range_one_hot():
    from sklearn.datasets import load_digits

    x, y, info = digits_dataset(dcfg(), 0)
    assert x.shape == (1797, 64) and y.shape == (1797, 10) and info == {"image_shape": (8, 8)}
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    ref = load_digits()
    np.testing.assert_array_equal(x, ref.data / 16)
    np.testing.assert_array_equal(y.argmax(axis=1), ref.target)
    assert tuple(np.bincount(ref.target)) == DIGITS_CLASS_COUNTS  # what validate() counts with
    _, lab, _ = digits_dataset(dcfg(target="label"), 0)
    assert lab.shape == (1797, 1)
    np.testing.assert_array_equal(lab[:, 0], ref.target)


@pytest.mark.parametrize("n", [2, 7, 50, 333])
def test_digits_subset_is_stratified(n):
    x, y, _ = digits_dataset(dcfg(n=n), 3)
    assert x.shape == (n, 64) and y.shape == (n, 10)
    counts = y.sum(axis=0)
    share = np.asarray(DIGITS_CLASS_COUNTS) / sum(DIGITS_CLASS_COUNTS)
    assert counts.sum() == n and np.all(np.abs(counts - n * share) < 1)
    assert stratified_counts([3, 1], 2) == [2, 0] and sum(stratified_counts(DIGITS_CLASS_COUNTS, n)) == n


def test_digits_subset_is_seeded():
    a = digits_dataset(dcfg(n=40), 1)
    b = digits_dataset(dcfg(n=40), 1)
    c = digits_dataset(dcfg(n=40), 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    full = digits_dataset(dcfg(), 0)[0]
    rows = {r.tobytes() for r in full}
    assert all(r.tobytes() in rows for r in a[0])  # a subset of the images, no new ones


def test_digits_classes_restrict_before_subsetting():
    x, y, _ = digits_dataset(dcfg(classes=[0, 1, 7], target="label"), 0)
    assert x.shape == (178 + 182 + 179, 64) and set(y[:, 0]) == {0.0, 1.0, 7.0}
    x, y, _ = digits_dataset(dcfg(classes=[7, 1], n=11), 5)
    assert y.shape == (11, 10)  # one-hot of the digit: 10 columns whatever is kept
    assert set(np.flatnonzero(y.sum(axis=0))) == {1, 7}
    assert sorted(y.sum(axis=0)[[1, 7]]) == [5, 6]
    with pytest.raises(DataError, match="data.classes"):
        digits_dataset(dcfg(classes=[3, 10]), 0)
    with pytest.raises(DataError, match="data.n"):
        digits_dataset(dcfg(classes=[3], n=500), 0)


@pytest.mark.parametrize("loader,k", [(moons_dataset, 2), (circles_dataset, 2), (blobs_dataset, 3)])
def test_2d_sets_shapes_seeds_noise(loader, k):
    base = dcfg(n=31)
    x, y = loader(base, 0)
    assert x.shape == (31, 2) and y.shape == (31, 1) and set(y[:, 0]) == set(range(k))
    x2, y2 = loader(base, 0)
    x3, _ = loader(base, 1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, x3)
    xo, yo = loader(dcfg(n=31, target="onehot"), 0)
    np.testing.assert_array_equal(xo, x)
    assert yo.shape == (31, k)
    np.testing.assert_array_equal(yo.argmax(axis=1), y[:, 0])
    xq, _ = loader(dcfg(n=31, noise=0.0), 0)
    xn, _ = loader(dcfg(n=31, noise=0.5), 0)
    assert not np.array_equal(xq, x) and not np.array_equal(xn, x)
    with pytest.raises(DataError, match="data.target"):
        loader(dcfg(n=31, target="sin"), 0)
    with pytest.raises(DataError, match="data.n"):
        loader(dcfg(n=None), 0)


def test_2d_sets_match_scikit_learn():
    from sklearn import datasets

    x, y = moons_dataset(dcfg(n=20), 4)
    ref = datasets.make_moons(n_samples=20, noise=0.1, random_state=4)
    np.testing.assert_array_equal(x, ref[0])
    np.testing.assert_array_equal(y[:, 0], ref[1])
    x, _ = circles_dataset(dcfg(n=20), 4)
    np.testing.assert_array_equal(x, datasets.make_circles(n_samples=20, noise=0.05, random_state=4)[0])
    x, _ = blobs_dataset(dcfg(n=20, noise=0.3), 4)
    np.testing.assert_array_equal(x, datasets.make_blobs(n_samples=20, centers=3, cluster_std=0.3, random_state=4)[0])
    xq, _ = circles_dataset(dcfg(n=20, noise=0.0), 4)
    r = np.hypot(xq[:, 0], xq[:, 1])
    np.testing.assert_allclose(np.sort(np.unique(r.round(9))), [0.8, 1.0])  # noise 0: exactly on the circles


def test_uniform_null_target_is_random():
    a = uniform_dataset(cfg(target=None, n=9, dim=2), 3)
    b = uniform_dataset(cfg(target="random", n=9, dim=2), 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ------------------------------------------------------------------ validate_loaded / image_shape


def test_validate_loaded_both_forms():
    x, y = np.arange(8.0).reshape(2, 4), np.array([1.0, 2.0])
    gx, gy, info = validate_loaded((x, y), "w")
    assert gx.shape == (2, 4) and gy.shape == (2, 1) and info == {}
    _, _, info = validate_loaded((x, y, {"image_shape": np.array([2, 2])}), "w")
    assert info == {"image_shape": (2, 2)} and all(type(v) is int for v in info["image_shape"])
    assert validate_loaded([x, y, {"other": 1}], "w")[2] == {}
    assert validate_loaded((x, y, None), "w")[2] == {}
    for bad in [(x,), (x, y, {}, 1), x, None]:
        with pytest.raises(DataError, match="w: a dataset loader returns"):
            validate_loaded(bad, "w")
    with pytest.raises(DataError, match="info"):
        validate_loaded((x, y, [1]), "w")
    with pytest.raises(DataError, match="too few points"):
        validate_loaded((x[:1], y[:1], {"image_shape": (4,)}), "w")


@pytest.mark.parametrize("shape", [(3, 3), (5,), (0, 4), (-2, -2), (1, 1, 2, 2), (2.0, 2.0), (True, 4), "22", 4, ()])
def test_validate_loaded_image_shape_mismatch(shape):
    x, y = np.zeros((3, 4)), np.zeros(3)
    with pytest.raises(DataError) as ei:
        validate_loaded((x, y, {"image_shape": shape}), "dataset 'mine'")
    msg = str(ei.value)
    assert msg.startswith(f"dataset 'mine': image_shape {shape!r} ") and "d=4" in msg and "\n" not in msg


def test_npz_image_shape(tmp_path):
    x, y = np.random.default_rng(0).random((5, 6)), np.arange(5.0)
    np.savez(tmp_path / "img.npz", x=x, y=y, image_shape=np.array([2, 3]))
    out = file_dataset(cfg(path=str(tmp_path / "img.npz")), 0)
    assert len(out) == 3 and out[2] == {"image_shape": (2, 3)}
    gx, gy, info = validate_loaded(out, "f")
    np.testing.assert_array_equal(gx, x)
    assert info == {"image_shape": (2, 3)}
    np.savez(tmp_path / "table.npz", table=np.c_[x, y], image_shape=np.array([3, 2]))
    out = file_dataset(cfg(path=str(tmp_path / "table.npz")), 0)
    assert out[0].shape == (5, 6) and out[2] == {"image_shape": (3, 2)}
    np.savez(tmp_path / "bad.npz", x=x, y=y, image_shape=np.array([4, 4]))
    with pytest.raises(DataError, match=r"bad\.npz: image_shape \(4, 4\) .*d=6"):
        file_dataset(cfg(path=str(tmp_path / "bad.npz")), 0)


# ------------------------------------------------------------------ config: data.* problems


def check(*overrides):
    validate(load_config(None, list(overrides)), *builtin_registries(), check_trainer=False)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["data.name=digits"],
        ["data.name=digits", "data.n=null", "data.classes=[0, 1, 7]", "data.target=label"],
        ["data.name=digits", "data.n=1797"],
        ["data.name=digits", "data.n=359", "data.classes=[0, 1]"],
        ["data.name=moons", "data.noise=0.3", "data.target=onehot", "model.parameterization=radial"],
        ["data.name=circles", "data.noise=0"],
        ["data.name=blobs", "data.n=3"],
        ["data.target=sin", "data.dim=3"],
        ["data.target=random"],
    ],
)
def test_good_data_configs(overrides):
    check(*overrides)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["data.target=onehot"], "data.target: expected 'random' or 'sin' for dataset 'uniform', got 'onehot'"),
        (["data.name=digits", "data.target=sin"], "data.target: expected 'onehot' or 'label' for dataset 'digits'"),
        (["data.name=moons", "data.target=random"], "data.target: expected 'label' or 'onehot' for dataset 'moons'"),
        (["data.classes=[1, 2]"], "data.classes: the 'uniform' dataset has no classes (only 'digits' and 'mnist' do)"),
        (["data.name=blobs", "data.classes=[1]"], "data.classes: the 'blobs' dataset has no classes (only 'digits' and 'mnist' do)"),
        (["data.name=digits", "data.classes=[1, 12]"], "data.classes: 12 not a digit 0..9"),
        (["data.name=digits", "data.classes=[-1]"], "data.classes: -1 not a digit"),
        (["data.name=digits", "data.classes=[3, 4, 3]"], "data.classes: lists 3 more than once"),
        (["data.name=digits", "data.classes=[]"], "data.classes: empty"),
        (["data.name=moons", "data.noise=-0.1"], "data.noise: must be >= 0"),
        (["data.name=circles", "data.noise=nan"], "data.noise: must be >= 0"),
        (["data.noise=0.1"], "data.noise: the 'uniform' dataset has no noise"),
        (["data.name=digits", "data.noise=0.1"], "data.noise: the 'digits' dataset has no noise"),
        (["data.name=digits", "data.n=1798"], "data.n: 1798 is more than the 1797 images"),
        (["data.name=digits", "data.n=400", "data.classes=[0, 1]"], "data.n: 400 is more than the 360 images 'digits' has of digits [0, 1]"),
        (["data.name=digits", "data.n=1"], "data.n: must be >= 2"),
        (["data.n=null"], "data.n: null (every image) is only for 'digits' and 'mnist'; the 'uniform' dataset"),
        (["data.name=moons", "data.n=null"], "data.n: null (every image) is only for 'digits' and 'mnist'; the 'moons' dataset"),
        (["data.name=circles", "data.n=1"], "data.n: must be >= 2"),
        (["data.classes=[a]"], "data.classes"),
        (["data.noise=abc"], "data.noise"),
    ],
)
def test_bad_data_configs_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as ei:
        check(*overrides)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_2d_sets_ignore_dim_low_high():
    check("data.name=moons", "data.dim=0", "data.low=2", "data.high=1")
    with pytest.raises(ConfigError, match="data.dim"):
        check("data.dim=0")


def test_data_problems_reported_together():
    with pytest.raises(ConfigError) as ei:
        check("data.name=digits", "data.classes=[1, 1, 11]", "data.noise=1", "data.target=sin")
    msg = str(ei.value)
    for key in ("data.classes: 11", "data.classes: lists 1", "data.noise", "data.target"):
        assert key in msg
    assert msg.count("; ") >= 3
