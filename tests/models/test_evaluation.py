"""The evaluation harness against shared/BASELINES.md: cases, crops, baselines and the CLI.

Reads the real radar events in `../shared/data/radar` (beside the repository, as in CI).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

from models.evaluation import baselines, cli
from models.evaluation.cases import (
    NoCasesError,
    block_average,
    build_cases,
    case_id,
    iter_cases,
    select_crop,
    source_of,
)
from models.evaluation.scoring import SCORE_NAMES, score_forecast

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
RADAR = SHARED / "data" / "radar"
BASELINES_MD = SHARED / "BASELINES.md"
TABLE_SCORES = SCORE_NAMES[:7]  # the baseline table's columns before runtime


@pytest.fixture(scope="module")
def baseline_rows() -> dict[tuple[str, str], dict[str, float]]:
    """{(case, method): {score: value}} from the per-case table of BASELINES.md."""
    assert BASELINES_MD.exists(), f"{BASELINES_MD} is missing (shared/ must sit beside the repo)"
    rows = {}
    for line in BASELINES_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and "_20" in cells[0]:
            rows[(cells[0], cells[1])] = dict(
                zip(TABLE_SCORES, map(float, cells[2:9]), strict=True)
            )
    assert rows, "no per-case rows found in BASELINES.md"
    return rows


def _case(file_name: str, wanted_id: str):
    return next(c for c in iter_cases(RADAR / file_name) if c.case_id == wanted_id)


def _assert_row_close(scores: dict[str, float], expected: dict[str, float], tol: float) -> None:
    for name in TABLE_SCORES:
        assert scores[name] == pytest.approx(expected[name], abs=tol), name


def test_case_ids_reproduce_baselines(baseline_rows: dict) -> None:
    cases = build_cases(sorted(glob.glob(str(RADAR / "*.nc"))))
    ids = [c.case_id for c in cases]
    assert len(ids) == len(set(ids))
    assert set(ids) == {case for case, _ in baseline_rows}
    for case in cases:
        assert case.past.shape == (7, 256, 256) and case.future.shape == (12, 256, 256)
        assert np.isfinite(case.past).all() and np.isfinite(case.future).all()


@pytest.mark.parametrize(
    ("file_name", "wanted_id"),
    [
        ("bom_prcp-cscn_2_20180616.nc", "bom_20180616_1036"),  # 500 m grid, block-averaged
        ("knmi_20100826.nc", "knmi_20100826_0430"),  # event from 04:00, sparse coverage
    ],
)
def test_persistence_reproduces_baseline_row(
    baseline_rows: dict, file_name: str, wanted_id: str
) -> None:
    case = _case(file_name, wanted_id)
    forecast = baselines.persistence(case.past, 12)
    scores = score_forecast(forecast, case.future, np.random.default_rng(0), case.pixel_size_km)
    _assert_row_close(scores[""], baseline_rows[(wanted_id, "persistence")], tol=0.005)


def test_pysteps_baselines_reproduce_rows(baseline_rows: dict) -> None:
    pytest.importorskip("pysteps")
    pytest.importorskip("cv2")
    case = _case("bom_prcp-cscn_2_20180616.nc", "bom_20180616_1036")
    rng = np.random.default_rng(0)
    for method in ("extrapolation", "sprog", "steps"):  # one 20-member STEPS run (~15 s)
        forecast = baselines.get_method(method)(
            case.past,
            12,
            interval_s=case.interval_s,
            pixel_size_km=case.pixel_size_km,
            members=baselines.STEPS_MEMBERS,
            seed=baselines.STEPS_SEED,
        )
        assert forecast.shape[1:] == (12, 256, 256) and np.isfinite(forecast).all()
        rows = score_forecast(forecast, case.future, rng, case.pixel_size_km)
        for suffix, scores in rows.items():
            _assert_row_close(scores, baseline_rows[(case.case_id, method + suffix)], tol=0.01)


def test_select_crop_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    frames = np.maximum(rng.gamma(0.4, 3.0, size=(19, 44, 52)) - 0.5, 0).astype(np.float32)
    frames[3, 30:36, 8:12] = np.nan
    frames[11, 0:5, 40:44] = np.nan
    frames[:, 20, 26] = np.nan
    size, stride = 16, 4
    best, best_wet = None, -1
    for row in range(0, 44 - size + 1, stride):
        for col in range(0, 52 - size + 1, stride):
            window = frames[:, row : row + size, col : col + size]
            if np.isnan(window).any():
                continue
            wet = int((window >= 1.0).sum())
            if wet > best_wet:
                best, best_wet = (row, col), wet
    assert best is not None
    assert select_crop(frames, size, stride) == best


def test_select_crop_without_covered_window() -> None:
    frames = np.ones((19, 20, 20), dtype=np.float32)
    frames[:, 10, 10] = np.nan
    assert select_crop(frames, 16, 4) is None
    assert select_crop(frames, 32, 4) is None


def test_block_average_and_missing_blocks() -> None:
    frames = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    frames[1, 0, 0] = np.nan
    averaged = block_average(frames, 2)
    assert averaged.shape == (2, 2, 3)
    assert averaged[0, 0, 0] == pytest.approx(np.mean(frames[0, :2, :2]))
    assert np.isnan(averaged[1, 0, 0]) and np.isfinite(averaged[1, 1, 1])


def test_case_naming() -> None:
    assert source_of("/x/bom_prcp-cscn_2_20180616.nc") == "bom"
    assert case_id("knmi", np.datetime64("2010-08-26T04:30")) == "knmi_20100826_0430"


def test_other_intervals_have_no_cases() -> None:
    with pytest.raises(NoCasesError, match="120 s"):
        next(iter_cases(RADAR / "mrms_20190610_crop512.nc"))


def test_evaluate_cli_end_to_end(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores.json"
    argv = [
        "--weights",
        str(tiny_model_dir),
        "--data",
        str(RADAR / "mch_20150515.nc"),
        "--cases",
        "mch_20150515_1615",
        "--crop-px",
        "64",
        "--members",
        "2",
        "--steps",
        "2",
        "--methods",
        "model,persistence",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "case mch_20150515_1615" in printed and "mean over 1 cases" in printed

    document = json.loads(out.read_text())
    assert set(document) >= {"cases", "mean"}
    methods = [r["method"] for r in document["cases"]]
    assert methods == ["model", "model_member", "persistence"]
    for record in document["cases"]:
        assert record["case"] == "mch_20150515_1615"
        assert set(record["scores"]) == set(SCORE_NAMES)
        assert record["runtime_s"] >= 0
        for name in ("CSI@0.1", "FSS@1mm/8km"):
            assert 0.0 <= record["scores"][name] <= 1.0
    by_method = {r["method"]: r for r in document["cases"]}
    assert by_method["model"]["runtime_s"] > 0
    assert 0.0 <= by_method["model"]["scores"]["rank_flatness"] <= 1.0
    persistence = by_method["persistence"]["scores"]
    assert persistence["CRPS"] == pytest.approx(persistence["MAE"])
    assert persistence["rank_flatness"] is None  # undefined for one member
    # a 2-member ensemble's CRPS is below the mean of its members' MAE
    assert by_method["model"]["scores"]["CRPS"] <= by_method["model_member"]["scores"]["MAE"]
    assert set(document["mean"]) == set(methods)
    assert document["mean"]["model"]["runtime_s"] == pytest.approx(by_method["model"]["runtime_s"])


def test_evaluate_cli_rejects_unknown_method(capsys) -> None:
    argv = ["--data", str(RADAR / "mch_20150515.nc"), "--methods", "persistence,magic"]
    assert cli.main(argv) == 2
    assert "magic" in capsys.readouterr().err
