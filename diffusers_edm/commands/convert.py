# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_edm.convert_edm_checkpoint` (`edm-convert`): converts an official EDM or EDM2 pickle into an
`EDMPipeline` folder without executing code from the pickle (see [`diffusers_edm.conversion.convert`]).

    python -m diffusers_edm.convert_edm_checkpoint edm-cifar10-32x32-cond-vp.pkl ./edm-cifar10-32x32-cond-vp [--verify]
    python -m diffusers_edm.convert_edm_checkpoint edm2-img512-xxl-0939524-0.075.pkl ./edm2-xxl-autog \
        --guide edm2-img512-m-0268435-0.155.pkl [--vae stabilityai/sd-vae-ft-mse]

Exit status: 0 on success, 1 when `--verify` finds a problem, 2 for bad input (one `<prog>: error: ...` line).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..conversion.convert import ConversionResult, convert_edm_checkpoint
from ..conversion.edm2_snapshot import EDM2Snapshot
from ..errors import VerificationFailedError
from ..sampler_presets import EDM2_NUM_STEPS, EDM2_PRESETS, SAMPLER_PRESETS, SAMPLER_SETTINGS_FILE
from .common import OneLineErrorParser, exit_with_error, reported_errors

PROG = "python -m diffusers_edm.convert_edm_checkpoint"


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Convert an official EDM or EDM2 pickle into a diffusers-edm EDMPipeline folder without"
        " executing code from the pickle.",
    )
    parser.add_argument("checkpoint", help="official .pkl (e.g. edm-cifar10-32x32-cond-vp.pkl,"
                        " edm2-img512-xs-2147483-0.135.pkl)")
    parser.add_argument("output_dir", help="folder to write the pipeline to (new or empty unless --overwrite)")
    parser.add_argument("--preset", choices=sorted([*SAMPLER_PRESETS, *EDM2_PRESETS]), default=None, metavar="PRESET",
                        help="recommended sampler settings to store, named as for `generate --preset` (default:"
                        " inferred from the file names and shape)")
    parser.add_argument("--guide", default=None, metavar="GUIDE.pkl",
                        help="EDM2: the guide network (autoguidance, or the unconditional model of classifier-free"
                        " guidance), stored as guide_unet; the matching preset's weight becomes the default")
    parser.add_argument("--vae", default=None, metavar="ID_OR_PATH",
                        help="EDM2 latent models: the AutoencoderKL to use instead of the one the pickle records (a"
                        " local folder on machines without internet)")
    parser.add_argument("--verify", action="store_true",
                        help="run the converted denoiser on random inputs and check it (and the reloaded folder) before"
                        " the folder is moved into place")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output folder as a whole, once the new one is complete"
                        " (never a folder holding the snapshot or the current directory)")
    return parser


def describe(result: ConversionResult) -> str:
    """What was converted, in two lines."""
    if isinstance(result.snapshot, EDM2Snapshot):
        return _describe_edm2(result)
    snapshot, preset = result.snapshot, result.preset
    churn = "deterministic" if preset.s_churn == 0 else (
        f"S_churn={preset.s_churn}, S_tmin={preset.s_tmin}, S_tmax={preset.s_tmax}, S_noise={preset.s_noise}"
    )
    recalled = " (recalled values: verify against the paper)" if preset.recalled else ""
    return (
        f"Converted {snapshot.precond_class} + {snapshot.model_class} ({snapshot.img_resolution}x"
        f"{snapshot.img_resolution}, {snapshot.img_channels} channels, {snapshot.label_dim} classes, augment_dim"
        f" {snapshot.augment_dim}, {len(snapshot.state_dict)} tensors) to {result.output_dir}\n"
        f"Sampler preset '{preset.name}' ({preset.dataset}): {preset.num_inference_steps} steps, {churn}{recalled};"
        f" the step count is stored in {SAMPLER_SETTINGS_FILE}"
    )


def _describe_edm2(result: ConversionResult) -> str:
    snapshot, preset, guide = result.snapshot, result.preset, result.guide
    space = f"latents of {snapshot.encoding.vae_name}" if snapshot.encoding else "pixels"
    shape = f"{snapshot.img_resolution}x{snapshot.img_resolution}x{snapshot.img_channels}"
    guided = f", guide {Path(guide.name).name}" if guide is not None else ""
    preset_line = (f"Preset '{preset.name}': guidance {preset.guidance}, reported {preset.metric} {preset.value}"
                   if preset else "No preset of the official generator matches these files: guidance 1")
    return (f"Converted EDM2 Precond + UNet ({shape} on {space}, {snapshot.label_dim} classes{guided}) to"
            f" {result.output_dir}\n{preset_line}; {EDM2_NUM_STEPS} steps, stored in {SAMPLER_SETTINGS_FILE}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when `--verify` finds a problem); bad input exits with
    status 2 after one `error:` line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with reported_errors(parser.prog):
            try:
                result = convert_edm_checkpoint(args.checkpoint, args.output_dir, preset=args.preset,
                                                verify=args.verify, overwrite=args.overwrite, guide=args.guide,
                                                vae=args.vae)
            except VerificationFailedError as error:
                print(error.report.summary())
                print(f"{parser.prog}: error: {error}", file=sys.stderr)
                return 1
            except FileNotFoundError as error:
                exit_with_error(parser.prog, str(error) if error.filename is None
                                else f"{error.filename}: no such file; pass the path of an EDM or EDM2 .pkl.")
            except ValueError as error:  # the file is not an EDM snapshot, or its network cannot be converted
                exit_with_error(parser.prog, str(error))
    except SystemExit as exit_:
        return int(exit_.code)
    print(describe(result))
    if result.verification is not None:
        print(result.verification.summary())
    return 0


def cli() -> int:
    """The `edm-convert` console script (its exit status is what `main` returns or raises, not its result)."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
