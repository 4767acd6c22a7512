from __future__ import annotations

import numpy as np
import pytest

from protoreg.data import file_dataset, uniform_dataset, validate_arrays
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
