"""One router per resource: nowcasts (jobs), models, health (healthz, readyz, metrics)."""
