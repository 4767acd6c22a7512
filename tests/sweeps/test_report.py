"""protoreg.sweeps.report: rows parsed for studies, a study's result checked at the boundary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import protoreg
from protoreg.errors import PluginError
from protoreg.sweeps.report import _json_numbers, evaluate_study, parse_row


def test_rows_are_parsed_for_studies() -> None:
    row = {"run": "none__seed=0", "mask": "none", "n": "20", "seed": "3", "steps": "100", "batch": "0",
           "fit_mse": "0.5", "recon_error": "inf", "dead_units": "2", "duplicate_prototypes": "0",
           "recon_ssim": "", "seconds": "1.25", "status": "completed", "data.n": "20"}
    got = parse_row(row)
    assert got["n"] == 20 and got["seed"] == 3 and got["steps"] == 100 and got["dead_units"] == 2
    assert got["fit_mse"] == 0.5 and math.isinf(got["recon_error"]) and got["seconds"] == 1.25
    assert got["recon_ssim"] is None  # not an image run
    assert got["status"] == "completed" and got["data.n"] == "20"  # swept values as written
    assert parse_row({"fit_mse": "nan?"})["fit_mse"] != parse_row({"fit_mse": "nan?"})["fit_mse"]  # unreadable: NaN


class Good(protoreg.Study):
    name = "good"

    def evaluate(self, results):  # type: ignore[no-untyped-def]
        return [protoreg.Claim("G1", "holds", "PASS", numbers={"rho": np.float64(0.5), "n": np.int64(3), "per_n": {"3": [np.float32(1.0)]}})]


def test_numpy_numbers_become_json_numbers() -> None:
    (claim,) = evaluate_study(Good(), "tests", None)  # type: ignore[arg-type]
    assert claim.numbers == {"rho": 0.5, "n": 3, "per_n": {"3": [1.0]}}
    assert type(claim.numbers["n"]) is int
    json.dumps(claim.as_dict())


@pytest.mark.parametrize(
    "returned, needle",
    [
        ("PASS", "evaluate() returned a str, expected a list of protoreg.Claim objects"),
        ([{"id": "x"}], "evaluate() returned a list holding dict"),
    ],
)
def test_a_study_returning_something_else_is_named(returned: object, needle: str) -> None:
    class Bad(protoreg.Study):
        name = "bad"

        def evaluate(self, results):  # type: ignore[no-untyped-def]
            return returned

    with pytest.raises(PluginError, match=r"^study 'bad' \(tests\): " + needle.replace("(", r"\(").replace(")", r"\)")):
        evaluate_study(Bad(), "tests", None)  # type: ignore[arg-type]


def test_a_study_that_raises_is_named() -> None:
    class Raises(protoreg.Study):
        name = "raises"

        def evaluate(self, results):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("no runs")

    with pytest.raises(PluginError, match=r"study 'raises' \(tests\): evaluate\(\) raised ZeroDivisionError: no runs"):
        evaluate_study(Raises(), "tests", None)  # type: ignore[arg-type]


def test_an_array_in_the_numbers_is_refused_naming_the_key() -> None:
    claim = protoreg.Claim("A1", "x", "PASS", numbers={"curve": np.zeros(3)})
    with pytest.raises(PluginError, match=r"claim 'A1': numbers\['curve'\] is a ndarray, not a JSON value .*\(use .tolist\(\)\)"):
        _json_numbers("study 'x' (tests)", claim)


def test_claims_read_back_as_written() -> None:
    claim = protoreg.Claim("C1", "coverage wins", "PARTIAL", "holds at 2 of 3 N", {"rho": 0.5}, ("N=3: yes", "N=5: no"))
    assert protoreg.Claim.from_dict(json.loads(json.dumps(claim.as_dict()))) == claim
    assert protoreg.Claim.from_dict({"id": "C2", "statement": "s", "verdict": "PASS"}) == protoreg.Claim("C2", "s", "PASS")
