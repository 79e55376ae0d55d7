# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
"""The loader file a saved [`EDMPipeline`] carries so that `DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)` finds the pipeline class, and how this package's own loading resolves it without running it."""

from __future__ import annotations

import json
import os

LOADER_MODULE = "pipeline_diffusers_edm"
"""Name of the loader file written next to `model_index.json`."""

INSTALL_HINT = (
    "diffusers-edm is not on the Python package index: install it from its source repository, e.g. `pip install"
    " git+<the diffusers-edm repository URL>` or `pip install ./diffusers-edm` from a clone"
)
"""How to install the package, in the words of the model cards and the loader file."""

LOADER_SOURCE = f'''"""Written by diffusers-edm: lets `DiffusionPipeline.from_pretrained(<this folder or repo>,
trust_remote_code=True)` load this pipeline. It runs nothing but an import of the installed diffusers-edm package."""

try:
    from diffusers_edm import EDMPipeline, EDMTextToImagePipeline  # noqa: F401
except ImportError as error:
    raise ImportError("This pipeline needs the diffusers-edm package. {INSTALL_HINT}.") from error
'''


def write_loader(save_directory: str | os.PathLike, index_file: str, pipeline_class: str) -> None:
    """Writes the loader file into a saved pipeline folder and records it in `model_index.json` (`index_file`) as
    `_class_name: [loader, class]`, the form diffusers resolves with `trust_remote_code=True`."""
    with open(os.path.join(save_directory, f"{LOADER_MODULE}.py"), "w", encoding="utf-8") as f:
        f.write(LOADER_SOURCE)
    index_path = os.path.join(save_directory, index_file)
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [LOADER_MODULE, pipeline_class]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


def resolve_loader_class_name(config: dict) -> None:
    """Replaces the `[loader, class]` form of `_class_name` by the class name, in place, so that loading the folder
    through this package never executes the loader file."""
    class_name = config.get("_class_name")
    if isinstance(class_name, list) and class_name and class_name[0] == LOADER_MODULE:
        config["_class_name"] = class_name[1]
