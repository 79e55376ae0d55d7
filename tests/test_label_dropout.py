"""`--label_dropout`: a fraction of the class labels is zeroed (EDM's "no label") in training mode only, for the
native backbones (the official networks' own label dropout) and for the `UNet2DModel` backbone."""

import argparse

import pytest
import torch

from diffusers_edm import EDMPreconditionedUNet2DModel
from diffusers_edm.commands.train import parse_args
from diffusers_edm.training.run_setup import TrainingError, build_model

from .helpers import tiny_unet_kwargs

BATCH, CLASSES, P = 4000, 3, 0.3


def song_model(label_dropout):
    return EDMPreconditionedUNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, num_class_labels=CLASSES, backbone_type="song_unet",
        backbone_config=dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                             label_dropout=label_dropout))


def unet_2d_model(label_dropout):
    return EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(num_class_labels=CLASSES, augment_dim=2,
                                                           label_dropout=label_dropout))


def dropped_fraction(model, embedding_module, integer_labels):
    """Runs a batch and returns the fraction of rows whose class conditioning reached the embedding as zeros."""
    seen = {}
    if embedding_module == "map_label":  # SongUNet: the label vector enters map_label
        hook = model.backbone.map_label.register_forward_hook(lambda m, inputs, out: seen.update(rows=inputs[0]))
    else:  # UNet2DModel: ConditioningEmbedding returns the class embedding (+ the zero augment part)
        hook = model.backbone.class_embedding.register_forward_hook(lambda m, inputs, out: seen.update(rows=out))
    labels = torch.arange(BATCH) % CLASSES
    if not integer_labels:
        labels = torch.nn.functional.one_hot(labels, CLASSES).float()
    x = torch.zeros(BATCH, 1, 8, 8)
    with torch.no_grad():
        model(x, 1.0, class_labels=labels)
    hook.remove()
    return (seen["rows"].abs().sum(dim=1) == 0).float().mean().item()


@pytest.mark.parametrize("make, module, integer_labels", [
    (song_model, "map_label", False), (unet_2d_model, "class_embedding", True),
    (unet_2d_model, "class_embedding", False)])
def test_label_dropout_zeroes_the_expected_fraction_in_training_only(make, module, integer_labels):
    torch.manual_seed(0)
    model = make(P)
    with torch.no_grad():  # a non-zero embedding table, so that only dropped rows embed to zero
        for parameter in model.parameters():
            parameter.normal_()
    model.train()
    fraction = dropped_fraction(model, module, integer_labels)
    assert abs(fraction - P) < 4 * (P * (1 - P) / BATCH) ** 0.5  # binomial: within 4 standard deviations
    model.eval()
    assert dropped_fraction(model, module, integer_labels) == 0.0
    assert dropped_fraction(make(0.0).train(), module, integer_labels) == 0.0


def test_train_edm_flag_reaches_both_backbones_and_needs_labels():
    dataset = argparse.Namespace(resolution=8, num_channels=1, num_classes=CLASSES)
    for arch in ("ddpmpp", "unet_2d"):
        args = parse_args(["--arch", arch, "--label_dropout", "0.1", "--model_channels", "8"])
        model = build_model(args, dataset, augment_dim=0)
        dropout = (model.backbone.label_dropout if arch == "ddpmpp" else model.backbone.class_embedding.label_dropout)
        assert dropout == 0.1
    with pytest.raises(TrainingError, match="needs class labels"):
        build_model(parse_args(["--arch", "ddpmpp", "--label_dropout", "0.1"]),
                    argparse.Namespace(resolution=8, num_channels=1, num_classes=0), augment_dim=0)
    with pytest.raises(SystemExit):
        parse_args(["--arch", "ddpmpp", "--label_dropout", "1.0"])
    with pytest.raises(ValueError, match="backbone_config"):
        EDMPreconditionedUNet2DModel(sample_size=8, in_channels=1, out_channels=1, num_class_labels=2,
                                     backbone_type="song_unet", label_dropout=0.1)
