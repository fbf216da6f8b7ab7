"""One router per resource: nowcasts (jobs), models, health (healthz, readyz, metrics), and ogc
(the same jobs through OGC API - Processes)."""
