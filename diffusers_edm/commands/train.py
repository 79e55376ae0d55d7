# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""`train_edm.py` (`edm-train`): trains an EDM model with accelerate, from one CPU to many GPUs and nodes.

    accelerate launch train_edm.py [--help]

Without arguments it trains a class-conditional model on scikit-learn's bundled 8x8 digits and writes an
`EDMPipeline` folder, sample grids and a model card to ./edm-digits. The training itself is
[`diffusers_edm.training`]; this module is its command line. A mistake the user can fix (settings, data, checkpoints,
a full or read-only disk) ends the run with one line, `train_edm.py: error: ...`, and exit status 2; anything else
keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ..data import DIGITS_DEFAULT_RESOLUTION
from ..training.loss import TRAINABLE_PRECONDITIONINGS
from ..training.phema import std_list_argument
from ..training.presets import EDM2_RECIPE, PRESETS, preset_defaults
from ..training.resume import resumed_arch
from ..training.run_setup import dry_run
from ..training.settings import (
    ARCHITECTURES,
    DEFAULT_BATCH_SIZE,
    LOSSES,
    LR_SCHEDULES,
    TRACKERS,
    Interval,
    parse_interval,
)
from ..training.trainer import EDMTrainer
from .common import OneLineErrorParser, reported_errors

DEFAULT_CAPTION_DROPOUT = 0.1
"""--caption_dropout of a text-to-image run that gives none (the share of empty prompts classifier-free guidance
commonly trains with)."""

PROG = "train_edm.py"


def int_list(text: str) -> list[int]:
    """A comma-separated list of integers (e.g. --channel_mult 1,2,2)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def build_parser() -> OneLineErrorParser:
    """The command line of `train_edm.py` (flag names follow diffusers' training examples)."""
    parser = OneLineErrorParser(
        prog=PROG,
        description=(
            "Train an EDM or EDM2 diffusion model (Karras et al. 2022, 2024) with accelerate. Without arguments it "
            "trains a class-conditional EDM2 model (magnitude-preserving U-Net, EDM2's loss, lr schedule and post-hoc "
            "EMA) on scikit-learn's bundled 8x8 digits (upsampled to 16x16) in about an hour on 2 CPU cores. "
            "Durations, ramp-ups and the EMA half-life are in thousands of training images (kimg), as in the paper; "
            "the progress bar shows steps and images."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, metavar="NAME",
                        help="Start from the settings of one of the paper's training runs (flags given explicitly "
                             "still win): " + ", ".join(PRESETS) + ". Names: dataset-cond|uncond-arch, with -vp/-ve "
                             "for the VP/VE baselines; edm2-img512-* (latents of --vae) and edm2-img64-* are EDM2's "
                             "official configurations.")
    parser.add_argument("--dry_run", action="store_true",
                        help="Print the resolved settings, the model's configuration and parameter count, and the "
                             "number of steps and images, then exit without writing anything.")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None,
                      help="Hugging Face dataset id or local dataset path (loaded with datasets.load_dataset).")
    data.add_argument("--dataset_config_name", default=None, help="Configuration name of --dataset_name.")
    data.add_argument("--train_data_dir", default=None,
                      help="Image folder (class sub-folders or metadata.jsonl/csv labels) or an EDM dataset "
                           "(folder or uncompressed zip of PNGs with dataset.json). Default: the embedded digits.")
    data.add_argument("--image_column", default="image", help="Image column of --dataset_name.")
    data.add_argument("--label_column", default="label", help="Label column of --dataset_name or the metadata file.")
    data.add_argument("--caption_column", default=None,
                      help="Train text-to-image on captions: the caption column of --dataset_name or of the image "
                           "folder's metadata.jsonl/csv (needs --text_encoder; class labels are then not used).")
    data.add_argument("--resolution", type=int, default=None,
                      help=f"Training resolution in pixels (images are resized). Default: the data's own size "
                           f"({DIGITS_DEFAULT_RESOLUTION} for the digits).")
    data.add_argument("--center_crop", action="store_true", help="Center-crop to a square before resizing.")
    flips = data.add_mutually_exclusive_group()
    flips.add_argument("--xflip", action="store_true",
                       help="EDM's dataset x-flip: add a mirrored copy of every image (doubles the dataset; "
                            "deterministic).")
    flips.add_argument("--random_flip", action="store_true",
                       help="diffusers' random flip: mirror each image with probability 1/2 every time it is drawn.")
    data.add_argument("--max_train_samples", type=int, default=None, help="Use a seeded random subset of this size.")
    conditioning = data.add_mutually_exclusive_group()
    conditioning.add_argument("--conditional", dest="conditional", action="store_const", const=True, default=None,
                              help="Class-conditional training; labels are required. Default: conditional iff the "
                                   "data has labels.")
    conditioning.add_argument("--unconditional", dest="conditional", action="store_const", const=False,
                              help="Ignore labels and train an unconditional model.")
    data.add_argument("--dataloader_num_workers", type=int, default=0,
                      help="Worker processes that decode the data once before training and load batches during it.")
    memory = data.add_mutually_exclusive_group()
    memory.add_argument("--data_in_memory", dest="data_in_memory", action="store_const", const=True, default=None,
                        help="Keep the decoded images in RAM. Default: when they take at most 256 MiB; larger data is "
                             "read from a decoded cache file.")
    memory.add_argument("--data_from_cache", dest="data_in_memory", action="store_const", const=False,
                        help="Read the decoded images from the cache file whatever their size (bounded RAM).")
    data.add_argument("--decoded_cache_dir", default=None,
                      help="Folder of the decoded-image cache files (reused while the data and --resolution, "
                           "--center_crop, --max_train_samples are unchanged). Default: "
                           "$HF_HOME/diffusers_edm/decoded.")
    data.add_argument("--cache_dir", default=None, help="Cache directory of datasets.load_dataset.")
    data.add_argument("--vae", default=None, metavar="ID_OR_PATH",
                      help="Train in the latent space of this diffusers AutoencoderKL (Hub id or folder; EDM2's "
                           "ImageNet-512: stabilityai/sd-vae-ft-mse): the images are encoded once, before training, "
                           "into a cache of posterior means and standard deviations (next to the decoded-image "
                           "cache), and each step draws latents from them, scaled as EDM2 does. The saved pipeline "
                           "holds the VAE and decodes its samples.")

    model = parser.add_argument_group("model (a UNet2DModel backbone)")
    model.add_argument("--pretrained_model_name_or_path", default=None,
                       help="Fine-tune: start from the denoiser of an EDMPipeline folder or Hub id (e.g. a converted "
                            "official model), as EDM's --transfer: its architecture, preconditioning and σ_data, its "
                            "weights copied wherever names and shapes match (new class/augment-label inputs start "
                            "initialised), the learning-rate ramp restarted and the EMA without ramp-up. The "
                            "architecture flags below are then ignored.")
    model.add_argument("--model_config", default=None,
                       help="JSON file with the EDMPreconditionedUNet2DModel configuration; overrides the "
                            "architecture flags below.")
    model.add_argument("--text_encoder", default=None, metavar="ID_OR_PATH",
                       help="--caption_column: the frozen CLIP text encoder (Hub id or folder, e.g. "
                            "openai/clip-vit-base-patch32, or a pipeline with text_encoder/ and tokenizer/). Its "
                            "pooled embedding enters the label path of every backbone; edm2 and unet_2d also "
                            "cross-attend to its tokens at --attn_resolutions. The captions are encoded once, before "
                            "training, into a cache next to the decoded images; the saved pipeline holds the encoder "
                            "and its tokenizer.")
    model.add_argument("--arch", choices=ARCHITECTURES, default=None,
                       help="Backbone F: EDM2's magnitude-preserving U-Net ('edm2', which also makes EDM2's recipe "
                            "the default: " + ", ".join(f"--{key} {value}" for key, value in EDM2_RECIPE.items())
                            + "), the paper's DDPM++ or NCSN++ (Song U-Net), ADM (Dhariwal U-Net), or diffusers' "
                            "UNet2DModel ('unet_2d'). Default: the --preset's; else the resumed checkpoint's; else "
                            "ddpmpp (EDM's recipe) with --pretrained_model_name_or_path or --model_config; else edm2.")
    model.add_argument("--model_channels", type=int, default=40, help="Channels of the first level.")
    model.add_argument("--channel_mult", type=int_list, default=[1, 2],
                       help="Per-level channel multipliers (comma-separated); one downsampling between levels "
                            "(paper CIFAR-10: 2,2,2).")
    model.add_argument("--layers_per_block", "--num_blocks", type=int, default=1,
                       help="Residual blocks per level (paper: 4 for DDPM++/NCSN++, 3 for ADM and EDM2).")
    model.add_argument("--attn_resolutions", type=int_list, default=[],
                       help="Resolutions (pixels) whose levels use self-attention, comma-separated (paper CIFAR-10: "
                            "16); the Song U-Net always attends at its lowest resolution.")
    model.add_argument("--dropout", type=float, default=0.1, help="Dropout probability in the residual blocks.")
    model.add_argument("--label_dropout", type=float, default=0.0,
                       help="Probability of training an image without its class label (the all-zero label, EDM's "
                            "'no label'), so that the model also learns the unconditional denoiser that "
                            "classifier-free guidance needs (e.g. 0.1); conditional data only.")
    model.add_argument("--caption_dropout", type=float, default=None,
                       help="--caption_column: probability of training an image with the empty prompt instead of its "
                            "caption, which teaches the null condition of classifier-free guidance (default 0.1).")
    model.add_argument("--precond", choices=TRAINABLE_PRECONDITIONINGS, default=None,
                       help="Preconditioning and loss (Table 1): EDM's, or the VP / VE baselines of Song et al. (their "
                            "σ distribution and λ(σ) = 1/σ²). Default: edm, or that of --model_config / the "
                            "pretrained model (a different value is an error).")
    model.add_argument("--sigma_data", type=float, default=None,
                       help="σ_data of the EDM preconditioning and loss. Default: 0.5, or that of --model_config / the "
                            "pretrained model (a different value is an error).")
    model.add_argument("--gradient_checkpointing", action="store_true",
                       help="Recompute the backbone's block activations in the backward pass: less memory for about "
                            "a third more compute; same results.")

    loss = parser.add_argument_group("loss and augmentation")
    loss.add_argument("--loss", choices=LOSSES, default="edm",
                      help="edm: λ(σ)-weighted squared error (EDM's, or the VP/VE baselines' with --precond); edm2: "
                           "EDM2's uncertainty-weighted form λ(σ)/e^u(σ) ‖D − y‖² + u(σ), with the learned u(σ) of "
                           "--arch edm2.")
    loss.add_argument("--p_mean", "--P_mean", type=float, default=-1.2, help="Mean of ln σ during training (P_mean).")
    loss.add_argument("--p_std", "--P_std", type=float, default=1.2,
                      help="Standard deviation of ln σ during training (P_std).")
    loss.add_argument("--augment_p", type=float, default=0.12,
                      help="Probability of each non-leaky geometric augmentation (0 disables augmentation and the "
                           "augment-label input). x-flips happen with probability 1/2 whenever it is > 0.")
    loss.add_argument("--augment_colors", action="store_true",
                      help="Also apply the colour augmentations (brightness, contrast, luma flip, hue, saturation; "
                           "1- or 3-channel images), adding 6 augment labels.")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--seed", type=int, default=0, help="Random seed.")
    optim.add_argument("--total_batch_size", type=int, default=None,
                       help="Images per optimizer step over all processes (EDM's --batch). The per-device batch "
                            "follows from it (or, with --train_batch_size, the gradient accumulation does). Default: "
                            "train_batch_size x processes x gradient_accumulation_steps.")
    optim.add_argument("--train_batch_size", type=int, default=None,
                       help=f"Images per device per forward pass (EDM's --batch-gpu). Default: "
                            f"{DEFAULT_BATCH_SIZE}, or what --total_batch_size gives.")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=None,
                       help="Forward passes per optimizer step. Default: 1, or what --total_batch_size and "
                            "--train_batch_size give.")
    optim.add_argument("--duration_kimg", type=float, default=200.0,
                       help="Training length in thousands of images (paper CIFAR-10: 200000).")
    optim.add_argument("--max_train_steps", type=int, default=None,
                       help="Stop after this many optimizer steps (whichever of this and --duration_kimg comes first).")
    optim.add_argument("--learning_rate", "--ref_lr", type=float, default=1e-3,
                       help="Adam learning rate after the ramp-up (EDM2's α_ref with --lr_schedule edm2).")
    optim.add_argument("--lr_schedule", choices=LR_SCHEDULES, default="edm",
                       help="edm: constant after the ramp-up; edm2: α_ref / √max(t / --ref_batches, 1) for step t, "
                            "after the same ramp-up (EDM2, Eq. 18).")
    optim.add_argument("--ref_batches", type=float, default=0.0,
                       help="--lr_schedule edm2: the step count after which the rate decays as 1/√t (0: never; "
                            "EDM2: 70000 at ImageNet-512, 35000 at ImageNet-64).")
    optim.add_argument("--lr_rampup_kimg", type=float, default=20.0,
                       help="Linear learning-rate warm-up, in thousands of images (paper: 10000).")
    optim.add_argument("--adam_beta1", type=float, default=0.9, help="Adam β1.")
    optim.add_argument("--adam_beta2", type=float, default=0.999, help="Adam β2.")
    optim.add_argument("--adam_epsilon", type=float, default=1e-8, help="Adam ε.")
    optim.add_argument("--ema_halflife_kimg", type=float, default=10.0,
                       help="EMA half-life in thousands of images (paper CIFAR-10: 500).")
    optim.add_argument("--ema_rampup_ratio", type=float, default=0.05,
                       help="EMA half-life ramp-up: at most this fraction of the images seen so far (0 disables).")
    optim.add_argument("--phema_stds", type=std_list_argument, default=None,
                       help="Also track power-function EMAs with these relative standard deviations σ_rel (EDM2's "
                            "post-hoc EMA, e.g. 0.05,0.10) and store their snapshots in output_dir/phema, from which "
                            "`python -m diffusers_edm.reconstruct_phema` builds the EMA of any σ_rel after training. "
                            "Default: off.")
    optim.add_argument("--phema_export_std", type=float, default=None, metavar="SIGMA_REL",
                       help="Write the post-hoc EMA of this σ_rel as the pipeline (at every save, the sample grids and "
                            "evaluations use it too): a tracked --phema_stds value exactly, any other reconstructed "
                            "from the run's snapshots. Default: the half-life EMA (--ema_halflife_kimg); with --arch "
                            "edm2, 0.10.")
    optim.add_argument("--phema_every", type=parse_interval, default=None,
                       help="Store the post-hoc EMA snapshots every N steps or K kimg ('kimg' suffix; at least 1 kimg "
                            "apart, as their names count kimg), and at the end (replacing a snapshot of the same kimg)."
                            " Default: every 1/16 of the training duration (at least 1 kimg).")
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="Mixed precision through accelerate (default: accelerate's configuration). fp16 needs a "
                            "GPU (autocast and a gradient scaler); on a CPU use bf16 or no.")
    optim.add_argument("--torch_compile", action="store_true", help="Compile the model with torch.compile.")
    optim.add_argument("--exact_numerics", action="store_true",
                       help="The official code's numerics instead of the fast defaults: no TF32 matmuls/convolutions "
                            "or fp16 reduced-precision reductions on the GPU, and torch's default Adam instead of the "
                            "fused one (results then match the official loop's to the last bit where the rest does).")
    optim.add_argument("--channels_last", action="store_true", help="Use the channels_last memory format.")

    output = parser.add_argument_group("outputs, checkpoints and the Hub")
    output.add_argument("--output_dir", default="edm-digits",
                        help="Where the pipeline, model card, sample grids and checkpoints are written.")
    output.add_argument("--checkpointing_steps", type=parse_interval, default=parse_interval("50kimg"),
                        help="Checkpoint (and rewrite the pipeline and card) every N steps, or every K kimg with a "
                             "'kimg' suffix (e.g. 50kimg); 0 disables.")
    output.add_argument("--checkpoints_total_limit", type=int, default=2,
                        help="Keep at most this many checkpoints (oldest removed first).")
    output.add_argument("--resume_from_checkpoint", default=None,
                        help="'latest' or a path to a checkpoint-<step> folder to continue from.")
    output.add_argument("--overwrite_output_dir", action="store_true",
                        help="Start a new run in an --output_dir that holds another run: its outputs (checkpoints, "
                             "post-hoc EMA snapshots, logs, pipeline, grids) are deleted first; other files stay.")
    output.add_argument("--sample_every", type=parse_interval, default=parse_interval("20kimg"),
                        help="Write a sample grid every N steps or K kimg ('kimg' suffix); 0 disables.")
    output.add_argument("--num_inference_steps", type=int, default=18,
                        help="Sampler steps for the sample grids (2N-1 network evaluations).")
    output.add_argument("--samples_per_class", type=int, default=8, help="Columns of the sample grid.")
    output.add_argument("--logging_steps", type=int, default=50, help="Log loss, lr and img/s every N steps.")
    output.add_argument("--report_to", choices=TRACKERS, default=None,
                        help="Experiment trackers (through accelerate) besides the console and logs/log.jsonl: "
                             "TensorBoard (events under output_dir/logs), Weights & Biases, all installed trackers, or "
                             "none. Default: tensorboard when it is installed, else none.")
    output.add_argument("--push_to_hub", action="store_true",
                        help="Upload the pipeline folder and model card at every save and at the end.")
    output.add_argument("--hub_model_id", default=None, help="Hub repository (default: the output_dir name).")
    token = output.add_mutually_exclusive_group()
    token.add_argument("--hub_token", default=None,
                       help="Hub token. Discouraged: a command line is visible to other users of the machine and "
                            "accelerate launch prints it when a run fails. Default: HF_TOKEN or the cached login "
                            "(`hf auth login`).")
    token.add_argument("--hub_token_file", default=None,
                       help="File holding the Hub token (read and stripped; the token is never written or logged).")
    output.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repository as private.")
    output.add_argument("--license", default="apache-2.0", help="License stated in the model card.")

    evaluation = parser.add_argument_group("evaluation (Fréchet distance of the EMA model during training)")
    evaluation.add_argument("--eval_every", type=parse_interval, default=None,
                            help="Score the EMA model every N steps or K kimg ('kimg' suffix), and at the end: the "
                                 "Fréchet distance of --eval_num samples (--num_inference_steps steps, "
                                 "--train_batch_size per device at a time) to the reference statistics, written to "
                                 "logs/log.jsonl, the trackers and the model card. Default: off.")
    evaluation.add_argument("--eval_num", type=int, default=10000,
                            help="Samples per evaluation: seeds 0..N-1, the same every time (compare only scores "
                                 "with the same N; the papers use 50000).")
    evaluation.add_argument("--eval_detector", default=None,
                            help="Feature network: inception (FID), dinov2 (FD-DINOv2), digits, or the path of a "
                                 "TorchScript file called as net(images_uint8, return_features=True). Default: digits "
                                 "for the embedded digits, else inception.")
    evaluation.add_argument("--eval_detector_path", default=None,
                            help="Local copy of the named detector (the inception-2015-12-05.pt file or a DINOv2 "
                                 "folder), for machines without internet.")
    evaluation.add_argument("--trust_detector", action="store_true",
                            help="Run a TorchScript --eval_detector that is not pinned even if it uses more than "
                                 "tensor arithmetic (TorchScript can read and write your files: only for files you "
                                 "trust).")
    evaluation.add_argument("--eval_ref", default=None,
                            help="Reference statistics: .npz path or URL (e.g. EDM's fid-refs). Default: those of the "
                                 "training images (no x-flip copies), computed once and cached as "
                                 "output_dir/eval-ref-<metric>.npz (delete it when the data changes).")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and validates the command line; a --preset's values are defaults that explicit flags override."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    defaults = preset_defaults(preset) if preset is not None else {}
    parser.set_defaults(**defaults)
    known = parser.parse_known_args(argv)[0]
    arch = known.arch or resumed_arch(known.output_dir, known.resume_from_checkpoint) or (
        "ddpmpp" if known.pretrained_model_name_or_path or known.model_config else "edm2")
    parser.set_defaults(arch=arch)
    if arch == "edm2":  # EDM2's recipe, under the preset's values and the flags
        parser.set_defaults(**{**EDM2_RECIPE, **defaults})
    args = parser.parse_args(argv)
    checks = [
        (args.total_batch_size is None or args.total_batch_size >= 1, "--total_batch_size must be >= 1"),
        (args.train_batch_size is None or args.train_batch_size >= 1, "--train_batch_size must be >= 1"),
        (args.gradient_accumulation_steps is None or args.gradient_accumulation_steps >= 1,
         "--gradient_accumulation_steps must be >= 1"),
        (args.duration_kimg > 0, "--duration_kimg must be > 0"),
        (args.max_train_steps is None or args.max_train_steps >= 1, "--max_train_steps must be >= 1"),
        (args.learning_rate > 0, "--learning_rate must be > 0"),
        (args.lr_rampup_kimg >= 0, "--lr_rampup_kimg must be >= 0"),
        (args.ema_halflife_kimg > 0, "--ema_halflife_kimg must be > 0"),
        (0 <= args.augment_p <= 1, "--augment_p must lie in [0, 1]"),
        (args.p_std > 0, "--p_std must be > 0"),
        (args.sigma_data is None or args.sigma_data > 0, "--sigma_data must be > 0"),
        (0 <= args.dropout < 1, "--dropout must lie in [0, 1)"),
        (0 <= args.label_dropout < 1, "--label_dropout must lie in [0, 1)"),
        (args.checkpoints_total_limit is None or args.checkpoints_total_limit >= 1,
         "--checkpoints_total_limit must be >= 1"),
        (args.resolution is None or args.resolution >= 4, "--resolution must be >= 4"),
        (args.num_inference_steps >= 1, "--num_inference_steps must be >= 1"),
        (not (args.dataset_name and args.train_data_dir), "pass only one of --dataset_name and --train_data_dir"),
        (args.eval_num >= 2, "--eval_num must be >= 2 (a covariance needs at least 2 samples)"),
        (args.ref_batches >= 0, "--ref_batches must be >= 0"),
        (args.caption_column is None or not args.label_dropout,
         "--label_dropout drops class labels; a text model drops captions with --caption_dropout"),
        (args.arch != "edm2" or args.augment_p == 0,
         "--arch edm2 has no augmentation conditioning (EDM2 trains without augmentation): pass --augment_p 0, and "
         "--xflip for mirrored copies"),
        (args.arch != "edm2" or not args.label_dropout,
         "--arch edm2 has no label dropout (EDM2 guides with a separate unconditional network): drop --label_dropout"),
        (args.vae is None or args.augment_p == 0,
         "--vae trains on latents, which EDM's geometric augmentation would distort: pass --augment_p 0 (and --xflip "
         "for mirrored copies)"),
        (args.vae is None or not args.random_flip,
         "--random_flip mirrors images, not latents: with --vae pass --xflip (both orientations are encoded)"),
        (args.phema_export_std is None or bool(args.phema_stds),
         "--phema_export_std needs tracked post-hoc EMAs: pass --phema_stds (e.g. 0.05,0.10)"),
        ((args.caption_column is None) == (args.text_encoder is None),
         "--caption_column and --text_encoder go together: captions need a text encoder, and the text encoder "
         "encodes the captions"),
        (args.caption_dropout is None or 0 <= args.caption_dropout < 1, "--caption_dropout must lie in [0, 1)"),
        (args.caption_dropout is None or args.caption_column is not None,
         "--caption_dropout drops captions: it needs --caption_column"),
        (args.caption_column is None or args.eval_every is None,
         "--eval_every scores class-conditional and unconditional models; score a text model's saved pipeline with "
         "its prompts instead"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.phema_every is not None and not args.phema_stds:
        parser.error("--phema_every sets how often post-hoc EMA snapshots are stored; it needs --phema_stds (e.g. "
                     "0.05,0.10)")
    if args.phema_stds and args.phema_every is None:
        args.phema_every = Interval(max(args.duration_kimg / 16, 1.0), "kimg")  # file names count whole kimg
    if args.eval_detector is None:
        args.eval_detector = "inception" if args.dataset_name or args.train_data_dir else "digits"
    if args.caption_column is not None and args.caption_dropout is None:
        args.caption_dropout = DEFAULT_CAPTION_DROPOUT
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the command line and trains (or, with `--dry_run`, reports what would be trained)."""
    train(parse_args(argv))


def train(args: argparse.Namespace) -> None:
    """Runs `train_edm.py` with parsed arguments; a user's mistake ends the run with one line and exit status 2 (on
    the main process only when every process raises it alike)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("accelerate", "diffusers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    disk_advice = ("free some space or pass an --output_dir on a disk with room, then continue with "
                   "--resume_from_checkpoint latest")
    with reported_errors(PROG, disk_advice, "pass an --output_dir you can write to", main_process_only=True):
        if args.dry_run:
            dry_run(args)
        else:
            EDMTrainer(args).train()


def cli() -> None:
    """The `edm-train` console script (its exit status is what `main` returns or raises, not its result)."""
    main()


if __name__ == "__main__":
    main()
