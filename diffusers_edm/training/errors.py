"""The error type of a training run's settings."""


class TrainingError(ValueError):
    """A mistake in the run's settings, files or environment that the user can fix; `train_edm.py` reports it as one
    line (exit status 2) instead of a traceback."""
