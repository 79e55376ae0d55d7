# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""What every command-line tool of diffusers-edm shares: the parser that reports a mistake in one line (and suggests
the flag that was probably meant), the conversion of the package's errors into that line, the argument types, and the
process state of `accelerate launch`."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import torch
from accelerate import PartialState

from ..errors import OUT_OF_SPACE, WRITE_ERRORS, EDMInputError, one_line, write_error_reason

MAX_SEEDS = 10_000_000
"""Most seeds one seed list may hold: [`parse_seeds`] refuses longer lists before expanding them."""

_SEED_ITEM = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)
_UNKNOWN_FLAGS = re.compile(r"unrecognized arguments: (.*)")


class OneLineErrorParser(argparse.ArgumentParser):
    """An `ArgumentParser` that reports a bad argument in one line, `<prog>: error: <message>` with exit status 2 (no
    usage text; `--help` shows it), and names the closest known flag for an unknown one."""

    def error(self, message: str) -> NoReturn:
        exit_with_error(self.prog, self._with_suggestions(message))

    def _with_suggestions(self, message: str) -> str:
        match = _UNKNOWN_FLAGS.fullmatch(message)
        if match is None:
            return message
        known = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        hints = []
        for flag in match.group(1).split():
            name = flag.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if name.startswith("-") else []
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
        return message + ("; " + "; ".join(hints) if hints else "")


def exit_with_error(prog: str, message: str) -> NoReturn:
    """Prints `<prog>: error: <message>` as one line on stderr and exits with status 2, as argparse does."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


@contextlib.contextmanager
def reported_errors(prog: str, disk_advice: str = "free some space, or choose a folder on a disk with room",
                    permission_advice: str = "choose a folder you can write to",
                    main_process_only: bool = False) -> Iterator[None]:
    """Turns a user's mistake raised inside the block into one line and exit status 2: the package's errors
    ([`EDMInputError`]) and a full, read-only or forbidden disk (with `disk_advice` for a full one, `permission_advice`
    for the others). Other errors keep their traceback. With `main_process_only`, a package error (which every process
    of a run raises alike) is printed by the main process only; a disk error is printed by every process that meets
    it."""
    try:
        yield
    except EDMInputError as error:
        if not main_process_only or PartialState().is_main_process:
            exit_with_error(prog, str(error))
        raise SystemExit(2) from None
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        advice = disk_advice if error.errno in OUT_OF_SPACE else f"check its permissions, or {permission_advice}"
        exit_with_error(prog, f"{error.filename or 'a file'}: {write_error_reason(error)}; {advice}.")


# --- argument types ------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def sigma_interval(text: str) -> tuple[float, float]:
    """A noise-level interval "LO,HI" with 0 ≤ LO < HI (HI may be "inf")."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two noise levels LO,HI (e.g. 0.28,5.42), got {text!r}") from None
    if not (0 <= low < high and not math.isnan(high)):
        raise argparse.ArgumentTypeError(f"the interval must satisfy 0 <= LO < HI (HI may be inf), got {text!r}")
    return low, high


def device_argument(text: str) -> str:
    """A torch device name."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    return text


def parse_seeds(text: str) -> list[int]:
    """
    Parses a seed list as EDM's `generate.py` does: comma-separated non-negative integers and inclusive ranges.

    Args:
        text (`str`): e.g. "0-63" or "1,2,5-10".

    Returns:
        `list[int]`: the seeds in the given order, e.g. [1, 2, 5, 6, 7, 8, 9, 10].

    Raises:
        `ValueError`: for an empty list, an item that is not an integer or range, a descending range, more than
        `MAX_SEEDS` seeds, or a seed given twice (its image would be generated and written twice).
    """
    ranges: list[range] = []
    for item in text.split(","):
        match = _SEED_ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(
                f"Invalid seed {item.strip()!r} in --seeds {text!r}: use non-negative integers and inclusive ranges"
                " separated by commas, e.g. '0-63' or '1,2,5-10'."
            )
        first = int(match.group(1))
        last = first if match.group(2) is None else int(match.group(2))
        if last < first:
            raise ValueError(f"Seed range {item.strip()!r} is descending; write it as '{last}-{first}'.")
        ranges.append(range(first, last + 1))
    count = sum(map(len, ranges))
    if count > MAX_SEEDS:
        raise ValueError(
            f"The seed list {text!r} holds {count:,} seeds, more than the limit of {MAX_SEEDS:,} per run; split the"
            " seeds over several runs."
        )
    seeds = [seed for seed_range in ranges for seed in seed_range]
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ValueError(f"Seed {seed} appears more than once in --seeds {text!r}; list every seed once.")
        seen.add(seed)
    return seeds


def seeds_argument(text: str) -> list[int]:
    """[`parse_seeds`] as an argument type."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_output_file(path: str | Path, flag: str) -> Path:
    """Checks, before any work, that `path` can be written as a file: not a folder, not below a file; its folder is
    created. An `EDMInputError` naming `flag` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise EDMInputError(f"{flag} {path} is a folder; pass the path of the file to write (e.g. {path / 'out.npz'}).")
    existing = next((folder for folder in path.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise EDMInputError(f"{flag} {path}: {existing} is a file, so {path} cannot be created; pass another path.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EDMInputError(f"{flag} {path}: cannot create {path.parent} ({write_error_reason(error)}); pass a path"
                            " you can write to.") from None
    return path


# --- processes -----------------------------------------------------------------------------------------------------


def process_state(device: str | None = None) -> PartialState:
    """
    Rank, world size and device of this process (`accelerate launch` or `torchrun` set them; a plain run is process
    0 of 1).

    `accelerate.PartialState` only joins a CPU process group when told the processes run on the CPU, so it is told
    when `device` is a CPU device, when `accelerate launch --cpu` ran this, or when there is no accelerator.

    Raises:
        `RuntimeError`: when the launcher started several processes but they did not form one group (each would
        do all the work).
    """
    if device is not None:
        use_cpu = torch.device(device).type == "cpu"
    else:
        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not _has_accelerator()
    state = PartialState(cpu=use_cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise RuntimeError(
            f"The launcher started {launched} processes (WORLD_SIZE) but accelerate set up {state.num_processes};"
            " each would do all the work. Launch with `accelerate launch` or `torchrun` and a --device matching"
            " the processes' devices."
        )
    return state


def leave_process_group() -> None:
    """Lets the processes of a multi-process run leave together: one that exits while another still computes aborts
    the group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):  # torch >= 2.6
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()
