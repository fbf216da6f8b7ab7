"""What `nowcast evaluate` prints and writes: fixed-width score tables and JSON-safe numbers."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from models.evaluation.scoring import PER_LEAD_NAMES, SCORE_NAMES, WET_THRESHOLD_MM_H


def format_score(value: float | None) -> str:
    """A score with 3 decimals; "-" for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}"


def format_table(rows: list[tuple[str, dict[str, float], float]], title: str) -> str:
    """A fixed-width table: one row per (method, scores, runtime_s)."""
    headers = ["method", *SCORE_NAMES, "runtime_s"]
    body = [[name, *(format_score(s[n]) for n in SCORE_NAMES), f"{rt:.2f}"] for name, s, rt in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = [
        title,
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        ),
    ]
    for row in body:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def json_number(value: float) -> float | None:
    """`value`, or None (JSON null) where it is not finite."""
    return float(value) if math.isfinite(value) else None


def mean_over_cases(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{method: {score or "runtime_s": mean over cases}} (NaN scores left out of a mean)."""
    means: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        means[method] = {}
        for name in SCORE_NAMES:
            values = np.array([r["scores"][name] for r in rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            means[method][name] = float(finite.mean()) if finite.size else float("nan")
        means[method]["runtime_s"] = float(np.mean([r["runtime_s"] for r in rows]))
    return means


def mean_per_lead_over_cases(records: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{method: {name: [mean over cases per lead]}} of the records that carry "per_lead".

    Each case counts where its value is finite (nanmean); a lead with no finite value stays NaN.
    Records without "per_lead" (the `_member` rows) are left out.
    """
    means: dict[str, dict[str, list[float]]] = {}
    for method in dict.fromkeys(r["method"] for r in records if "per_lead" in r):
        rows = [r["per_lead"] for r in records if r["method"] == method and "per_lead" in r]
        means[method] = {}
        for name in PER_LEAD_NAMES:
            values = np.array([row[name] for row in rows], dtype=np.float64)  # (cases, leads)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN leads stay NaN
                means[method][name] = [float(v) for v in np.nanmean(values, axis=0)]
    return means


def format_per_lead(means: dict[str, dict[str, list[float]]], title: str) -> str:
    """The per-lead table: CSI@1 per method, then forecast vs observed wet fraction per method.

    means: `mean_per_lead_over_cases`'s output; columns are the leads 1..T.
    """
    csi_name, wet_name, observed_name = PER_LEAD_NAMES
    n_leads = max((len(m[csi_name]) for m in means.values()), default=0)
    label_width = max([len("  observed"), *(len(m) for m in means)])

    def line(label: str, values: list[float]) -> str:
        return label.ljust(label_width) + "".join(f"{format_score(v):>7}" for v in values)

    header = line("lead", []) + "".join(f"{lead:>7}" for lead in range(1, n_leads + 1))
    lines = [f"{title}: {csi_name} of the ensemble mean", header]
    lines += [line(method, m[csi_name]) for method, m in means.items()]
    lines += [f"fraction of pixels > {WET_THRESHOLD_MM_H:g} mm/h, forecast vs observed", header]
    for method, m in means.items():
        lines += [line(method, m[wet_name]), line("  observed", m[observed_name])]
    return "\n".join(lines)


def format_alignment(rows: list[dict[str, Any]]) -> str:
    """The alignment table: per case and target, then the mean per target factor."""
    keys = (
        "target_mm_h",
        "unguided_mean_mm_h",
        "guided_mean_mm_h",
        "rel_error_unguided",
        "rel_error_guided",
        "CRPS_unguided",
        "CRPS_guided",
    )
    lines = [
        "knowledge alignment: target = factor x true future mean",
        f"{'case':<22} {'factor':>6} " + " ".join(f"{k:>18}" for k in keys),
    ]
    for row in rows:
        lines.append(
            f"{row['case']:<22} {row['target_factor']:>6g} "
            + " ".join(f"{format_score(row[k]):>18}" for k in keys)
        )
    for factor in dict.fromkeys(row["target_factor"] for row in rows):
        subset = [r for r in rows if r["target_factor"] == factor]
        if subset:
            means = {k: float(np.nanmean([r[k] for r in subset])) for k in keys}
            lines.append(
                f"{'mean':<22} {factor:>6g} "
                + " ".join(f"{format_score(means[k]):>18}" for k in keys)
            )
    return "\n".join(lines)
