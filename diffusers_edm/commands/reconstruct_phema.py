# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.reconstruct_phema` (`edm-phema`): the EMA of any σ_rel, after training, from the post-hoc
EMA snapshots of a `train_edm.py --phema_stds ...` run (see [`diffusers_edm.training.phema_reconstruction`]).

    python -m diffusers_edm.reconstruct_phema --run edm-digits --out edm-digits-phema     # σ_rel 0.10
    python -m diffusers_edm.reconstruct_phema --run edm-digits --std 0.07 --out edm-digits-phema-0.070
    python -m diffusers_edm.reconstruct_phema --run edm-digits --std 0.03,0.05,0.10,0.15 --out sweep/
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..training.phema import std_list_argument
from ..training.phema_reconstruction import RECOMMENDED_STD, RECORD_NAME, reconstruct
from .common import OneLineErrorParser, reported_errors

PROG = "python -m diffusers_edm.reconstruct_phema"

__all__ = ["RECORD_NAME", "build_parser", "main", "reconstruct"]


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Reconstruct the post-hoc EMA of any σ_rel from the snapshots of a train_edm.py run made with "
                    "--phema_stds, and save it as an EDMPipeline folder.",
    )
    parser.add_argument("--run", required=True, help="The run's --output_dir (holds the pipeline and phema/).")
    parser.add_argument("--std", type=std_list_argument, default=[RECOMMENDED_STD],
                        help="σ_rel of the EMA to reconstruct, or a comma-separated list to sweep (each in (0, 0.2887);"
                             f" EDM2's optima lie between 0.015 and 0.2). Default: {RECOMMENDED_STD}, the best on the "
                             "digits (flat between 0.10 and 0.13), a good start for small datasets.")
    parser.add_argument("--at_kimg", type=int, default=None,
                        help="Training time of the reconstruction, in kimg: a time at which snapshots were stored "
                             "(default: the latest). Only snapshots up to that time are used.")
    parser.add_argument("--out", required=True,
                        help="Output pipeline folder (one σ_rel) or parent folder of std-<σ_rel> folders (several).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace output folders that exist, as a whole, once the new one is complete (never the "
                             "run, its snapshots, the current folder or a parent of any of them).")
    return parser


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line entry point; a mistake prints one line and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with reported_errors(parser.prog):
        return reconstruct(Path(args.run), args.std, Path(args.out), args.at_kimg, args.overwrite)


def cli() -> None:
    """The `edm-phema` console script (its exit status is what `main` returns or raises, not its result)."""
    main()


if __name__ == "__main__":
    main()
