# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The evaluation's own errors: each is a user mistake or an unavailable input, reported as one line by the command
line."""


class EvaluationError(ValueError):
    """Base class: the message says what is wrong and what to pass instead."""
