# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The evaluation's own errors: each is a user mistake or an unavailable input, reported as one line by the command
line."""


class EvaluationError(ValueError):
    """Base class: the message says what is wrong and what to pass instead."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
