"""NetCDF in and out for the service: the names the API and the worker import.

Reading and validating radar input lives in `service.radar_input`; writing the forecast in
`service.forecast_output`. This module only gathers their public names.
"""

from service.forecast_output import (
    DEFAULT_PERCENTILES,
    DEFAULT_PRODUCTS,
    DEFAULT_THRESHOLDS_MM_H,
    MEAN_VARIABLE,
    MEMBERS_VARIABLE,
    PERCENTILE_VARIABLE,
    PROBABILITY_VARIABLE,
    PRODUCTS,
    write_forecast_netcdf,
)
from service.radar_input import (
    MAX_RAIN_MM_H,
    RadarInput,
    RadarInputError,
    read_radar_netcdf,
)

__all__ = [
    "DEFAULT_PERCENTILES",
    "DEFAULT_PRODUCTS",
    "DEFAULT_THRESHOLDS_MM_H",
    "MAX_RAIN_MM_H",
    "MEAN_VARIABLE",
    "MEMBERS_VARIABLE",
    "PERCENTILE_VARIABLE",
    "PROBABILITY_VARIABLE",
    "PRODUCTS",
    "RadarInput",
    "RadarInputError",
    "read_radar_netcdf",
    "write_forecast_netcdf",
]
