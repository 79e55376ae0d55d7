"""Text conditioning: the networks' cross-attention to text tokens (padding masked; EDM2's magnitude-preserving form
equal in its two implementations), and `EDMTextToImagePipeline` with a tiny random `CLIPTextModel` and a tokenizer over
a small local vocabulary: shapes, classifier-free guidance against the empty prompt computed by hand, `prompt_embeds`
equal to `prompt`, save/load with the text components, one-line errors."""

import pytest
import torch

from diffusers_edm import EDMHeunScheduler, EDMPipeline, EDMPreconditionedUNet2DModel, EDMTextToImagePipeline
from diffusers_edm.pipelines.text_encoding import encode_prompts

from .helpers import randomize_, save_tiny_text_encoder, tiny_unet_kwargs

WIDTH = 16  # the tiny text encoder's hidden size
EDM2_TINY = dict(backbone_type="edm2_unet", sample_size=8, in_channels=1, out_channels=1,
                 backbone_config=dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                                      channels_per_head=8))


def text_unet(backbone: str, cross_attention: bool = True, seed: int = 0) -> EDMPreconditionedUNet2DModel:
    kwargs = EDM2_TINY if backbone == "edm2_unet" else tiny_unet_kwargs()
    unet = EDMPreconditionedUNet2DModel(**kwargs, num_class_labels=WIDTH,
                                        cross_attention_dim=WIDTH if cross_attention else 0)
    return randomize_(unet, seed=seed).eval()


@pytest.fixture(scope="module")
def text_components(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    text_encoder, tokenizer = save_tiny_text_encoder(folder, hidden_size=WIDTH)
    return text_encoder, tokenizer, folder


def tokens(batch: int, count: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, count, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", ["unet_2d", "edm2_unet"])
def test_cross_attention_follows_the_real_tokens_and_ignores_padding(backbone):
    unet = text_unet(backbone)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    pooled = torch.nn.functional.normalize(torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(2)), dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    context = tokens(2)
    padding_changed = context.clone()
    padding_changed[0, 3:] += 5
    padding_changed[1, 2:] -= 5
    real_changed = context.clone()
    real_changed[:, 0] += 1
    run = lambda t: unet(x, 0.7, class_labels=pooled, encoder_hidden_states=t,  # noqa: E731
                         encoder_attention_mask=mask).sample
    torch.testing.assert_close(run(padding_changed), run(context), rtol=0, atol=1e-5)
    assert (run(real_changed) - run(context)).abs().max() > 1e-3
    unmasked = unet(x, 0.7, class_labels=pooled, encoder_hidden_states=padding_changed).sample
    assert (unmasked - run(context)).abs().max() > 1e-3


def test_edm2_cross_attention_implementations_agree():
    unet = text_unet("edm2_unet")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    pooled = torch.nn.functional.normalize(torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(4)), dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    outputs = []
    for implementation in ("official", "sdpa"):
        unet.set_attention_implementation(implementation)
        outputs.append(unet(x, 2.0, class_labels=pooled, encoder_hidden_states=tokens(3),
                            encoder_attention_mask=mask).sample)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_edm2_cross_attention_output_has_at_most_unit_magnitude():
    """The attended values are convex combinations of per-head unit-RMS vectors (v normalised as in EDM2's
    self-attention), so whatever the token scale, the attention output's RMS per pixel and head is ≤ 1."""
    from diffusers_edm.models.edm2_layers import EDM2Block

    block = EDM2Block(16, 16, emb_channels=8, attention=True, channels_per_head=8, cross_attention_dim=WIDTH)
    with torch.no_grad():
        attended = block._cross_attention(torch.randn(2, 16, 4, 4), block.cross_kv(tokens(2) * 100), None)
    attended = attended.reshape(2, 2, 8, 16)
    rms = attended.pow(2).mean(dim=2).sqrt()
    assert bool((rms <= 1 + 1e-5).all()) and float(rms.max()) > 0.3


def test_text_conditioning_is_refused_where_it_cannot_work():
    with pytest.raises(ValueError, match="text-token cross-attention needs a backbone"):
        EDMPreconditionedUNet2DModel(backbone_type="song_unet", sample_size=8, in_channels=1, out_channels=1,
                                     num_class_labels=WIDTH, cross_attention_dim=WIDTH,
                                     backbone_config=dict(model_channels=8, channel_mult=[1, 2], num_blocks=1))
    unet = text_unet("unet_2d")
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"pass encoder_hidden_states \(1, T, 16\)"):
        unet(x, 1.0, class_labels=torch.zeros(1, WIDTH))
    with pytest.raises(ValueError, match=r"must have shape \(1, T, 16\)"):
        unet(x, 1.0, class_labels=torch.zeros(1, WIDTH), encoder_hidden_states=torch.zeros(1, 4, 8))
    with pytest.raises(ValueError, match="no cross-attention"):
        text_unet("unet_2d", cross_attention=False)(x, 1.0, class_labels=torch.zeros(1, WIDTH),
                                                    encoder_hidden_states=torch.zeros(1, 4, WIDTH))


def make_pipeline(text_components, backbone="edm2_unet", cross_attention=True) -> EDMTextToImagePipeline:
    text_encoder, tokenizer, _ = text_components
    pipe = EDMTextToImagePipeline(unet=text_unet(backbone, cross_attention), scheduler=EDMHeunScheduler(),
                                  text_encoder=text_encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("backbone, cross_attention", [("edm2_unet", True), ("unet_2d", True), ("unet_2d", False)])
def test_prompts_give_one_image_per_prompt_and_repeat(text_components, backbone, cross_attention):
    pipe = make_pipeline(text_components, backbone, cross_attention)
    images = pipe(["a thick seven", "a thin two"], num_images_per_prompt=3, num_inference_steps=2,
                  output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (6, 8, 8, 1)
    same_noise = pipe(["a thick seven", "a thick seven"], num_inference_steps=2, output_type="latent",
                      latents=torch.ones(2, 1, 8, 8)).images
    torch.testing.assert_close(same_noise[0], same_noise[1])
    other_prompt = pipe(["a thick seven", "a thin two"], num_inference_steps=2, output_type="latent",
                        latents=torch.ones(2, 1, 8, 8)).images
    assert (other_prompt[0] - other_prompt[1]).abs().max() > 1e-4


def test_classifier_free_guidance_contrasts_the_prompt_with_the_empty_prompt(text_components):
    """One Heun step from σ_max is a single (guided) evaluation at σ_max: the image is D_neg + w (D − D_neg), with the
    negative branch the empty prompt's (the null condition) unless a negative prompt is given."""
    text_encoder, tokenizer, _ = text_components
    pipe = make_pipeline(text_components)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    prompts, w = ["a thick seven", "a thin two"], 2.5
    sigma_max = pipe.scheduler.config.sigma_max

    def denoised(texts):
        embeddings = encode_prompts(text_encoder, tokenizer, texts)
        return pipe.unet(noise.double() * sigma_max, sigma_max, **embeddings.unet_kwargs(True)).sample

    for negative in (None, "a red circle"):
        image = pipe(prompts, negative_prompt=negative, guidance_scale=w, num_inference_steps=1, latents=noise,
                     output_type="latent").images
        expected = torch.lerp(denoised([negative or ""] * 2), denoised(prompts), w)
        torch.testing.assert_close(image, expected.to(image.dtype), rtol=1e-5, atol=1e-5)


def test_prompt_embeds_give_the_images_of_the_prompt(text_components):
    pipe = make_pipeline(text_components)
    prompts = ["a thick seven", "a thin two"]
    kwargs = dict(num_images_per_prompt=2, num_inference_steps=3, guidance_scale=2.0, output_type="np",
                  seeds=[0, 1, 2, 3])
    from_prompt = pipe(prompts, negative_prompt="a digit", **kwargs).images
    positive, negative = pipe.encode_prompt(prompts, "cpu", 1, True, "a digit")
    from_embeds = pipe(prompt_embeds=positive.tokens, pooled_prompt_embeds=positive.pooled,
                       prompt_attention_mask=positive.mask, negative_prompt_embeds=negative.tokens,
                       negative_pooled_prompt_embeds=negative.pooled, negative_prompt_attention_mask=negative.mask,
                       **kwargs).images
    assert (from_prompt == from_embeds).all()


def test_a_saved_text_pipeline_loads_with_its_text_components(text_components, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = make_pipeline(text_components)
    pipe.save_pretrained(tmp_path / "t2i")
    kwargs = dict(prompt=["a thin nine"], num_inference_steps=2, guidance_scale=1.5, output_type="np", seeds=[7])
    expected = pipe(**kwargs).images
    for loaded in (EDMTextToImagePipeline.from_pretrained(tmp_path / "t2i"),
                   EDMPipeline.from_pretrained(tmp_path / "t2i"),  # the saved class, with its text components
                   DiffusionPipeline.from_pretrained(tmp_path / "t2i", trust_remote_code=True)):
        assert isinstance(loaded, EDMTextToImagePipeline) and loaded.text_encoder is not None
        loaded.set_progress_bar_config(disable=True)
        assert (loaded(**kwargs).images == expected).all()


def test_text_input_mistakes_are_one_line_errors(text_components):
    text_encoder, tokenizer, _ = text_components
    pipe = make_pipeline(text_components)
    embeds = pipe.encode_prompt("a digit", "cpu")[0]
    cases = [
        (dict(prompt="a digit", prompt_embeds=embeds.tokens, pooled_prompt_embeds=embeds.pooled),
         "either prompt or prompt_embeds"),
        (dict(), "Pass a prompt"),
        (dict(prompt_embeds=embeds.tokens), "need their pooled_prompt_embeds"),
        (dict(prompt_embeds=embeds.tokens.tolist(), pooled_prompt_embeds=embeds.pooled), "must be a torch.Tensor"),
        (dict(prompt="a digit", seeds=[1, 2]), "Got 2 seeds for 1 images"),
        (dict(prompt=["a digit", "a one"], negative_prompt=["a two"], guidance_scale=2.0),
         "1 negative prompts for 2 prompts"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(num_inference_steps=1, **kwargs)
    without_text = EDMTextToImagePipeline(unet=pipe.unet, scheduler=pipe.scheduler)
    with pytest.raises(ValueError, match="needs the pipeline's text_encoder and tokenizer"):
        without_text("a digit", num_inference_steps=1)
    with pytest.raises(ValueError, match="negative .empty. prompt of classifier-free guidance"):
        without_text(prompt_embeds=embeds.tokens, pooled_prompt_embeds=embeds.pooled, guidance_scale=2.0,
                     num_inference_steps=1)
    narrow = EDMPreconditionedUNet2DModel(**tiny_unet_kwargs(), num_class_labels=8, cross_attention_dim=8)
    with pytest.raises(ValueError, match=r"text encoder's width \(16\) does not fit the unet"):
        EDMTextToImagePipeline(unet=narrow, scheduler=EDMHeunScheduler(), text_encoder=text_encoder,
                               tokenizer=tokenizer)
    with pytest.raises(ValueError, match="takes no conditioning"):
        EDMTextToImagePipeline(unet=EDMPreconditionedUNet2DModel(**tiny_unet_kwargs()), scheduler=EDMHeunScheduler())
    with pytest.raises(TypeError):
        EDMPipeline(unet=pipe.unet, scheduler=pipe.scheduler)(prompt="a digit")


def test_the_command_line_tools_refuse_a_text_model_in_one_line(text_components, tmp_path, capsys):
    from diffusers_edm.commands.generate import main as generate

    make_pipeline(text_components).save_pretrained(tmp_path / "t2i")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        generate(["--model", str(tmp_path / "t2i"), "--seeds", "0-1", "--outdir", str(tmp_path / "images")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is an EDMTextToImagePipeline" in lines[0]
