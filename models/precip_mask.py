"""Where a nowcast may have rain: near the rain that the extrapolation carries to each lead.

A one-hour nowcast has no skill at starting rain far from any rain seen on radar, yet a diffusion
model trained on a few events paints isolated cells into dry areas (a dry input gave up to
11 mm/h). STEPS guards against the same thing with its "incremental" precipitation mask: rain is
allowed only inside a buffer around the (advected) observed rain, faded out over a rim. This is
that mask, built with pySTEPS' own `compute_dilated_mask` on the extrapolation nowcast of each
lead: the rain the model keeps is what moves, grows or decays near advected rain.

Unlike STEPS, the mask follows the extrapolation, not each member's previous lead: the members'
own recursion would cost 20 x 12 dilations per forecast (~6 s here) for a buffer that already
spans the rim at every lead.
"""

from __future__ import annotations

import numpy as np

from models.motion import DBR_THRESHOLD_MM_H, pysteps_module


def rain_mask(
    extrapolation_mm_h: np.ndarray,
    *,
    rim_px: int,
    buffer_px: int = 2,
    threshold_mm_h: float = DBR_THRESHOLD_MM_H,
) -> np.ndarray:
    """The weight of the forecast at each lead: 1 near extrapolated rain, 0 far from it.

    Parameters
    ----------
    extrapolation_mm_h (`(T, H, W)`): the extrapolation nowcast [mm h-1], NaN = no coverage.
    rim_px: width of the rim over which the weight falls from 1 to 0 [pixels].
    buffer_px: radius of the full-weight buffer around the rain [pixels] (STEPS: half the
        distance one time step moves rain at 1 km/min, 2 px at 5 min and 1 km).
    threshold_mm_h: what counts as rain (the protocol's 0.1 mm/h).

    Returns
    -------
    `(T, H, W)` float32 in [0, 1]; all 0 at a lead without rain.
    """
    from scipy.ndimage import generate_binary_structure, iterate_structure

    utils = pysteps_module().nowcasts.utils  # type: ignore[attr-defined]
    structure = iterate_structure(generate_binary_structure(2, 1), buffer_px)
    wet = np.nan_to_num(extrapolation_mm_h, nan=0.0) >= threshold_mm_h
    masks = np.zeros(wet.shape, dtype=np.float32)
    for lead, frame in enumerate(wet):
        if frame.any():  # pySTEPS normalises by the maximum: an all-dry frame would be 0 / 0
            masks[lead] = utils.compute_dilated_mask(frame, structure, rim_px)
    return masks
