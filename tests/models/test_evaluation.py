"""The evaluation harness against shared/BASELINES.md: cases, crops, baselines and the CLI.

Reads the real radar events in `../shared/data/radar` (beside the repository, as in CI); the tests
that need them skip where that folder is missing, the others run on synthetic arrays.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

from models.data import DEFAULT_DATA_DIR
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
from models.evaluation.report import format_per_lead, mean_per_lead_over_cases
from models.evaluation.scoring import PER_LEAD_NAMES, SCORE_NAMES, per_lead_scores, score_forecast

RADAR = DEFAULT_DATA_DIR  # <shared>/data/radar
BASELINES_MD = RADAR.parents[1] / "BASELINES.md"
TABLE_SCORES = SCORE_NAMES[:7]  # the baseline table's columns before runtime
needs_data = pytest.mark.skipif(not RADAR.is_dir(), reason="shared radar data not present")


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


@needs_data
def test_case_ids_reproduce_baselines(baseline_rows: dict) -> None:
    cases = build_cases(sorted(glob.glob(str(RADAR / "*.nc"))))
    ids = [c.case_id for c in cases]
    assert len(ids) == len(set(ids))
    assert set(ids) == {case for case, _ in baseline_rows}
    for case in cases:
        assert case.past.shape == (7, 256, 256) and case.future.shape == (12, 256, 256)
        assert np.isfinite(case.past).all() and np.isfinite(case.future).all()


@needs_data
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


@needs_data
def test_pysteps_baselines_reproduce_rows(baseline_rows: dict) -> None:
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


@needs_data
def test_other_intervals_have_no_cases() -> None:
    with pytest.raises(NoCasesError, match="120 s"):
        next(iter_cases(RADAR / "mrms_20190610_crop512.nc"))


@needs_data
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

    # per-lead lists on the main records only; with one case their mean is the case's lists
    n_leads = document["settings"]["n_leads"]
    assert "per_lead" not in by_method["model_member"]
    assert set(document["mean_per_lead"]) == {"model", "persistence"}
    for method in ("model", "persistence"):
        per_lead = by_method[method]["per_lead"]
        assert set(per_lead) == set(PER_LEAD_NAMES)
        assert all(len(values) == n_leads for values in per_lead.values())
        assert document["mean_per_lead"][method] == per_lead
        csi = [v for v in per_lead["CSI@1"] if v is not None]
        assert by_method[method]["scores"]["CSI@1"] == pytest.approx(np.mean(csi))
        for name in ("wet_fraction", "observed_wet_fraction"):
            assert all(0.0 <= v <= 1.0 for v in per_lead[name])
    model_wet, persistence_wet = (
        by_method[m]["per_lead"]["observed_wet_fraction"] for m in ("model", "persistence")
    )
    assert model_wet == persistence_wet  # both see the same future
    assert "per lead, mean over 1 cases: CSI@1" in printed


@needs_data
def test_alignment_report_steers_to_each_target_factor(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "alignment.json"
    argv = ["--weights", str(tiny_model_dir), "--data", str(RADAR / "mch_20150515.nc")]
    argv += ["--cases", "mch_20150515_1615", "--crop-px", "64", "--members", "2", "--steps", "2"]
    argv += ["--methods", "model", "--no-member-rows", "--alignment-report", "--json", str(out)]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())["alignment"]
    assert [row["target_factor"] for row in rows] == list(cli.ALIGNMENT_TARGET_FACTORS)
    true_mean = rows[0]["target_mm_h"] / rows[0]["target_factor"]
    for row in rows:
        assert row["target_mm_h"] == pytest.approx(row["target_factor"] * true_mean)
        error = abs(row["guided_mean_mm_h"] - row["target_mm_h"]) / row["target_mm_h"]
        assert row["rel_error_guided"] == pytest.approx(error)
        assert row["CRPS_guided"] > 0 and row["runtime_s"] > 0


def test_evaluate_cli_rejects_unknown_method(capsys) -> None:
    argv = ["--data", str(RADAR / "mch_20150515.nc"), "--methods", "persistence,magic"]
    assert cli.main(argv) == 2
    assert "magic" in capsys.readouterr().err


def _ensemble_hit_miss_dry() -> tuple[np.ndarray, np.ndarray]:
    """A 2-member, 3-lead, 2x2 forecast: lead 1 a hit, lead 2 a miss, lead 3 dry everywhere."""
    observed = np.zeros((3, 2, 2))
    observed[0, 0, 0] = 2.0
    observed[1, 1, 1] = 3.0
    members = np.zeros((2, 3, 2, 2))
    members[:, 0, 0, 0] = 2.0  # both members hit the one wet pixel: CSI 1
    # lead 2: member 0 is wet where the observation is dry, member 1 is NaN (dry) where it is wet;
    # their mean 1.5 at [0, 0] is a false alarm and [1, 1] a miss: CSI 0
    members[0, 1, 0, 0] = 3.0
    members[1, 1, 1, 1] = np.nan
    return members, observed


def test_per_lead_scores_by_hand() -> None:
    members, observed = _ensemble_hit_miss_dry()
    scores = per_lead_scores(members, observed)
    assert list(scores) == list(PER_LEAD_NAMES)
    csi = scores["CSI@1"]
    assert csi[:2] == [1.0, 0.0] and np.isnan(csi[2])  # no event in either field: 0/0
    # members' wet pixels: lead 1 1/4 and 1/4, lead 2 1/4 and 0/4 (NaN counts as dry)
    assert scores["wet_fraction"] == [0.25, 0.125, 0.0]
    assert scores["observed_wet_fraction"] == [0.25, 0.25, 0.0]


def test_per_lead_scores_threshold_and_coverage() -> None:
    observed = np.array([[[1.0, 1.5], [np.nan, 0.0]]])  # 1 mm/h itself is not wet
    members = np.array([[[[1.0, 1.5], [5.0, 0.0]]]])  # wet under the uncovered pixel: left out
    scores = per_lead_scores(members, observed)
    assert scores == {"CSI@1": [1.0], "wet_fraction": [1 / 3], "observed_wet_fraction": [1 / 3]}
    nothing_covered = per_lead_scores(members, np.full_like(observed, np.nan))
    assert np.isnan(nothing_covered["wet_fraction"][0])
    with pytest.raises(ValueError, match="must be"):
        per_lead_scores(members[0], observed)


def test_per_lead_csi_averages_to_protocol_score() -> None:
    rng = np.random.default_rng(3)
    observed = np.maximum(rng.gamma(0.5, 2.0, size=(4, 16, 16)) - 0.5, 0)
    members = np.maximum(rng.gamma(0.5, 2.0, size=(3, 4, 16, 16)) - 0.5, 0)
    csi = per_lead_scores(members, observed)["CSI@1"]
    scores = score_forecast(members, observed, rng, member_row=False)[""]
    assert np.mean(csi) == pytest.approx(scores["CSI@1"])


def test_mean_per_lead_over_cases_and_table() -> None:
    nan = float("nan")
    records = [
        {"method": "model", "per_lead": {n: [0.2, nan] for n in PER_LEAD_NAMES}},
        {"method": "model_member"},  # no per-lead lists: left out
        {"method": "model", "per_lead": {n: [0.4, nan] for n in PER_LEAD_NAMES}},
        {"method": "persistence", "per_lead": {n: [nan, 0.5] for n in PER_LEAD_NAMES}},
    ]
    means = mean_per_lead_over_cases(records)
    assert list(means) == ["model", "persistence"]
    assert means["model"]["CSI@1"][0] == pytest.approx(0.3) and np.isnan(means["model"]["CSI@1"][1])
    assert np.isnan(means["persistence"]["wet_fraction"][0])
    assert means["persistence"]["wet_fraction"][1] == 0.5

    lines = format_per_lead(means, "per lead").splitlines()
    assert lines[0] == "per lead: CSI@1 of the ensemble mean"
    assert lines[1].split() == ["lead", "1", "2"]
    assert lines[2].split() == ["model", "0.300", "-"]
    assert lines[3].split() == ["persistence", "-", "0.500"]
    assert lines[4] == "fraction of pixels > 1 mm/h, forecast vs observed"
    labels = [line.split()[0] for line in lines[6:]]
    assert labels == ["model", "observed", "persistence", "observed"]
    assert len({len(line) for line in lines[1:4] + lines[5:]}) == 1  # aligned columns
