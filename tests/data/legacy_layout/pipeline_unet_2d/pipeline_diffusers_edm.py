"""Written by diffusers-edm: lets `DiffusionPipeline.from_pretrained(<this repo>, trust_remote_code=True)` load
this pipeline. It only imports the installed package (`pip install diffusers-edm`)."""

from diffusers_edm import EDMPipeline  # noqa: F401
