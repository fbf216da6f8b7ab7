"""Unit conversions, all in one place: rain rate [mm h-1] <-> normalised model space, dBZ -> mm h-1.

Works on NumPy arrays and on torch tensors (dispatch on type) without importing torch, so the
API process can use the dBZ conversion without loading torch.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

ArrayT = TypeVar("ArrayT")

# Marshall-Palmer: Z = 200 R^1.6
MARSHALL_PALMER_A = 200.0
MARSHALL_PALMER_B = 1.6


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def normalise_rain(rain_mm_h: ArrayT, rain_max_mm_h: float = 128.0) -> ArrayT:
    """Rain rate [mm h-1] (>= 0, finite) -> model space x = log1p(R) / log1p(R_max).

    0 mm/h maps to 0, `rain_max_mm_h` to 1; larger rates go above 1 (no clipping).
    """
    scale = 1.0 / math.log1p(rain_max_mm_h)
    if _is_torch(rain_mm_h):
        return rain_mm_h.clamp_min(0).log1p() * scale  # type: ignore[attr-defined]
    return (np.log1p(np.maximum(rain_mm_h, 0)) * scale).astype(np.float32)  # type: ignore[return-value]


def denormalise_rain(x: ArrayT, rain_max_mm_h: float = 128.0) -> ArrayT:
    """Model space -> rain rate [mm h-1]; negative model values map to 0 mm/h."""
    scale = math.log1p(rain_max_mm_h)
    if _is_torch(x):
        return (x * scale).expm1().clamp_min(0)  # type: ignore[attr-defined]
    return np.maximum(np.expm1(np.asarray(x, dtype=np.float32) * scale), 0).astype(np.float32)  # type: ignore[return-value]


def dbz_to_mm_h(
    dbz: np.ndarray, a: float = MARSHALL_PALMER_A, b: float = MARSHALL_PALMER_B
) -> np.ndarray:
    """Reflectivity [dBZ] -> rain rate [mm h-1] with Z = a R^b (default Marshall-Palmer)."""
    z = np.power(10.0, np.asarray(dbz, dtype=np.float64) / 10.0)
    return np.power(z / a, 1.0 / b).astype(np.float32)
