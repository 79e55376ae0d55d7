"""Command-line interface of `train_edm.py` (flag names follow diffusers' training examples)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .data import DIGITS_DEFAULT_RESOLUTION
from .errors import TrainingError  # noqa: F401 - imported from here by the rest of the package
from .loss import TRAINABLE_PRECONDITIONINGS
from .phema import std_list_argument
from .presets import PRESETS, preset_defaults

NATIVE_ARCHITECTURES = {
    "ddpmpp": ("song_unet", dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                                 channel_mult_noise=1, resample_filter=[1, 1])),
    "ncsnpp": ("song_unet", dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                                 channel_mult_noise=2, resample_filter=[1, 3, 3, 1])),
    "adm": ("dhariwal_unet", {}),
}
"""--arch choices of the paper's backbones: (backbone_type, fixed backbone_config) of EDM train.py's DDPM++, NCSN++
and ADM settings."""

ARCHITECTURES = (*NATIVE_ARCHITECTURES, "unet_2d")

TRACKERS = ("tensorboard", "wandb", "all", "none")
"""--report_to choices: accelerate trackers (`all` = every installed one)."""

DEFAULT_BATCH_SIZE = 64
"""Per-device batch when neither --train_batch_size nor --total_batch_size gives one."""
"""--arch choices: the paper's backbones and diffusers' UNet2DModel."""


@dataclass(frozen=True)
class Interval:
    """How often something happens: every `value` optimizer steps, or every `value` thousand images ("kimg")."""

    value: float
    unit: str  # "steps" or "kimg"

    def due(self, step: int, cur_nimg: int, prev_nimg: int) -> bool:
        """Whether the interval elapsed with the step that took the image count from `prev_nimg` to `cur_nimg`."""
        if self.unit == "steps":
            return step % int(self.value) == 0
        period = self.value * 1000
        return int(cur_nimg // period) > int(prev_nimg // period)

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


def parse_interval(text: str) -> Interval | None:
    """Parses "500" (steps), "500steps" or "20kimg"; "0" or "none" disables."""
    cleaned = text.strip().lower()
    if cleaned in ("0", "none", "off"):
        return None
    unit = "kimg" if cleaned.endswith("kimg") else "steps"
    number = cleaned.removesuffix("kimg").removesuffix("steps")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interval: use e.g. 500 (steps) or 20kimg (images)")
    if value <= 0 or (unit == "steps" and value != int(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be a positive number (whole for steps)")
    return Interval(value, unit)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_edm.py",
        description=(
            "Train an EDM diffusion model (Karras et al. 2022) with accelerate. Without arguments it trains a "
            "class-conditional model on scikit-learn's bundled 8x8 digits (upsampled to 16x16) in about 20 minutes "
            "on 2 CPU cores. Durations, ramp-ups and the EMA half-life are in thousands of training images (kimg), as "
            "in the paper; the progress bar shows steps and images."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, metavar="NAME",
                        help="Start from the settings of one of the paper's training runs (flags given explicitly "
                             "still win): " + ", ".join(PRESETS) + ". Names: dataset-cond|uncond-arch, with -vp/-ve "
                             "for the VP/VE baselines.")
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
    data.add_argument("--resolution", type=int, default=None,
                      help=f"Training resolution in pixels (images are resized). Default: the data's own size "
                           f"({DIGITS_DEFAULT_RESOLUTION} for the digits).")
    data.add_argument("--center_crop", action="store_true", help="Center-crop to a square before resizing.")
    data.add_argument("--random_flip", action="store_true",
                      help="Dataset x-flip: add a mirrored copy of every image (EDM's --xflip; doubles the dataset).")
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
    model.add_argument("--arch", choices=ARCHITECTURES, default="ddpmpp",
                       help="Backbone F: the paper's DDPM++ or NCSN++ (Song U-Net), ADM (Dhariwal U-Net), or "
                            "diffusers' UNet2DModel ('unet_2d').")
    model.add_argument("--model_channels", type=int, default=40, help="Channels of the first level.")
    model.add_argument("--channel_mult", type=_int_list, default=[1, 2],
                       help="Per-level channel multipliers (comma-separated); one downsampling between levels "
                            "(paper CIFAR-10: 2,2,2).")
    model.add_argument("--layers_per_block", type=int, default=1,
                       help="Residual blocks per level (paper: 4 for DDPM++/NCSN++, 3 for ADM).")
    model.add_argument("--attn_resolutions", type=_int_list, default=[],
                       help="Resolutions (pixels) whose levels use self-attention, comma-separated (paper CIFAR-10: "
                            "16); the Song U-Net always attends at its lowest resolution.")
    model.add_argument("--dropout", type=float, default=0.1, help="Dropout probability in the residual blocks.")
    model.add_argument("--label_dropout", type=float, default=0.0,
                       help="Probability of training an image without its class label (the all-zero label, EDM's "
                            "'no label'), so that the model also learns the unconditional denoiser that "
                            "classifier-free guidance needs (e.g. 0.1); conditional data only.")
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
    loss.add_argument("--p_mean", type=float, default=-1.2, help="Mean of ln σ during training (P_mean).")
    loss.add_argument("--p_std", type=float, default=1.2, help="Standard deviation of ln σ during training (P_std).")
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
    optim.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate after the ramp-up.")
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
    optim.add_argument("--phema_every", type=parse_interval, default=None,
                       help="Store the post-hoc EMA snapshots every N steps or K kimg ('kimg' suffix; at least 1 kimg "
                            "apart, as their names count kimg), and at the end (replacing a snapshot of the same kimg)."
                            " Default: every 1/16 of the training duration.")
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
    evaluation.add_argument("--eval_ref", default=None,
                            help="Reference statistics: .npz path or URL (e.g. EDM's fid-refs). Default: those of the "
                                 "training images (no x-flip copies), computed once and cached as "
                                 "output_dir/eval-ref-<metric>.npz (delete it when the data changes).")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and validates the command line; a --preset's values are defaults that explicit flags override."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset is not None:
        parser.set_defaults(**preset_defaults(preset))
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
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.phema_stds and args.phema_every is None:
        args.phema_every = Interval(args.duration_kimg / 16, "kimg")
    if args.eval_detector is None:
        args.eval_detector = "inception" if args.dataset_name or args.train_data_dir else "digits"
    return args


def resolve_batch_sizes(args: argparse.Namespace, num_processes: int) -> None:
    """Sets `args.train_batch_size` and `args.gradient_accumulation_steps` to numbers: from --total_batch_size when
    given (EDM's --batch; the per-device batch, or with --train_batch_size the accumulation, follows), else the
    defaults. A total that does not split evenly is a TrainingError naming the numbers."""
    total, per_device, accumulation = args.total_batch_size, args.train_batch_size, args.gradient_accumulation_steps
    if total is None:
        args.train_batch_size = per_device or DEFAULT_BATCH_SIZE
        args.gradient_accumulation_steps = accumulation or 1
        return
    if per_device is None:
        accumulation = accumulation or 1
        per_device = total // (num_processes * accumulation)
    elif accumulation is None:
        accumulation = max(total // (num_processes * per_device), 1)
    if per_device * num_processes * accumulation != total:
        raise TrainingError(
            f"--total_batch_size {total} is not {num_processes} process(es) x --train_batch_size {per_device} x "
            f"--gradient_accumulation_steps {accumulation}: pass a --train_batch_size that divides "
            f"{total // num_processes if total % num_processes == 0 else total} evenly (or a total divisible by the "
            f"number of processes).")
    args.train_batch_size, args.gradient_accumulation_steps = per_device, accumulation
