"""Early-exit model family: data views, training, per-stage export and threshold calibration."""
