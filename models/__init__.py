"""PreDiff model stack: networks, noise schedules and samplers, the inference pipeline,
training, evaluation and export. Never imports `service`."""
