"""Post-hoc EMA reconstruction (Karras et al. 2024, Sec. 3): the EMA of any length σ_rel, after training, from the
power-function EMA snapshots that `train_edm.py --phema_stds ...` stored.

    python -m diffusers_edm.reconstruct_phema --run edm-digits --out edm-digits-phema     # σ_rel 0.10
    python -m diffusers_edm.reconstruct_phema --run edm-digits --std 0.07 --out edm-digits-phema-0.070
    python -m diffusers_edm.reconstruct_phema --run edm-digits --std 0.03,0.05,0.10,0.15 --out sweep/

With one σ_rel, `--out` is the new pipeline folder; with several, `--out` gets one `std-<σ_rel:.3f>` pipeline folder
per value. Each folder is the run's `EDMPipeline` with the reconstructed weights and a `phema_reconstruction.json`
that records the snapshots used and their coefficients.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .generate import OneLineErrorParser, check_model_folder
from .pipelines.pipeline_edm import EDMPipeline
from .training.phema import (
    SNAPSHOT_FOLDER,
    Snapshot,
    describe_reconstruction,
    list_snapshots,
    reconstruct_state_dict,
    std_list_argument,
)

RECORD_NAME = "phema_reconstruction.json"

RECOMMENDED_STD = 0.10
"""Default σ_rel: the best EMA length measured on the digits (FD_digits, two seed sets)."""


class ReconstructionError(ValueError):
    """A mistake in the arguments or the run folder; reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m diffusers_edm.reconstruct_phema",
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
    parser.add_argument("--overwrite", action="store_true", help="Replace output folders that exist.")
    return parser


def select_snapshots(run: Path, at_kimg: int | None) -> tuple[list[Snapshot], int]:
    """The snapshots to combine and the target image count: those stored up to `at_kimg` (default: the latest)."""
    folder = run / SNAPSHOT_FOLDER
    try:
        snapshots = list_snapshots(folder) if folder.is_dir() else []
    except ValueError as error:
        raise ReconstructionError(f"{error}; remove or replace that file") from None
    if not snapshots:
        raise ReconstructionError(f"{folder} holds no post-hoc EMA snapshots: train with --phema_stds (e.g. "
                                  f"0.05,0.10) to store them.")
    times = sorted({s.nimg for s in snapshots})
    if at_kimg is None:
        target = times[-1]
    else:
        matching = [nimg for nimg in times if nimg // 1000 == at_kimg]
        if not matching:
            stored = ", ".join(str(nimg // 1000) for nimg in times)
            raise ReconstructionError(f"--at_kimg {at_kimg}: no snapshots were stored at that time; stored kimg: "
                                      f"{stored}.")
        target = matching[-1]
    return [s for s in snapshots if s.nimg <= target], target


def output_folders(out: Path, stds: Sequence[float], overwrite: bool) -> list[Path]:
    folders = [out] if len(stds) == 1 else [out / f"std-{std:.3f}" for std in stds]
    for folder in folders:
        if folder.exists() and not overwrite:
            raise ReconstructionError(f"{folder} exists; pass --overwrite to replace it or choose another --out.")
    return folders


def reconstruct(run: Path, stds: Sequence[float], out: Path, at_kimg: int | None = None,
                overwrite: bool = False) -> list[Path]:
    """Writes one pipeline folder per σ_rel in `stds`; returns their paths."""
    try:
        check_model_folder(run)
    except ValueError as error:
        raise ReconstructionError(f"--run {run}: {error}") from None
    snapshots, target = select_snapshots(run, at_kimg)
    folders = output_folders(out, stds, overwrite)
    pipeline = EDMPipeline.from_pretrained(run)
    for std, folder in zip(stds, folders):
        state, coefficients = reconstruct_state_dict(snapshots, target, std)
        try:
            pipeline.unet.load_state_dict(state)
        except RuntimeError:  # snapshots of another architecture than the run's pipeline
            raise ReconstructionError(f"the snapshots in {run / SNAPSHOT_FOLDER} do not fit the model in {run} (other "
                                      f"tensor names or shapes); keep only the snapshots of this run there.") from None
        if folder.exists():
            shutil.rmtree(folder)
        pipeline.save_pretrained(folder)
        record = describe_reconstruction(snapshots, coefficients, target, std)
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"σ_rel {std:.3f} at {target / 1000:g} kimg from {len(snapshots)} snapshots -> {folder}")
    return folders


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return reconstruct(Path(args.run), args.std, Path(args.out), args.at_kimg, args.overwrite)
    except ReconstructionError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
