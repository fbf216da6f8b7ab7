"""The nowcasting service: HTTP API, job store and queue, workers, NetCDF in and out."""
