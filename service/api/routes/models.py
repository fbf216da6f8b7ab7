"""`/v1/models`: the loaded model and what input it accepts."""

from __future__ import annotations

from fastapi import APIRouter

from models.metadata import CONSTRAINT_TYPES
from service.api.deps import StateDep
from service.api.schemas import MAX_MEMBERS, GridRules, ModelList, ModelOut
from service.netcdf_io import DEFAULT_THRESHOLDS_MM_H, PRODUCTS

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="The loaded model")
def list_models(state: StateDep) -> ModelList:
    """Name, version, frames in/out, interval, pixel size, grid rules and constraint types."""
    model = state.model
    config = model.config
    return ModelList(
        models=[
            ModelOut(
                name=model.name,
                version=model.version,
                weights_sha256=model.weights_checksum,
                frames_in=config.frames_in,
                frames_out=config.frames_out,
                interval_s=config.interval_s,
                pixel_size_m=config.pixel_size_m,
                grid=GridRules(factor_px=config.grid_factor, max_px=config.max_domain_px),
                constraint_types=list(CONSTRAINT_TYPES),
                default_steps=config.diffusion.sampling_steps,
                max_steps=config.diffusion.num_train_steps,
                max_members=MAX_MEMBERS,
                products=list(PRODUCTS),
                default_thresholds_mm_h=list(DEFAULT_THRESHOLDS_MM_H),
                input_variables=[
                    "lwe_precipitation_rate [mm h-1]",
                    f"equivalent_reflectivity_factor [dBZ] via Z = {state.settings.zr_a:g} "
                    f"R^{state.settings.zr_b:g}",
                ],
            )
        ]
    )
