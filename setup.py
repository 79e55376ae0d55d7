"""Installable package for diffusers-edm (EDM, Karras et al. 2022, as a diffusers plugin)."""

from setuptools import find_packages, setup

TEST_REQUIRES = ["pytest>=8", "scikit-learn>=1.3", "scipy>=1.10"]

setup(
    name="diffusers-edm",
    version="0.1.0",
    description="EDM (Elucidating the Design Space of Diffusion-Based Generative Models) for Hugging Face diffusers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["diffusers_edm", "diffusers_edm.*"]),
    package_data={
        "diffusers_edm": ["iddpm_levels_m1000.safetensors"],
        "diffusers_edm.evaluation": ["digits_features.pt"],
    },
    entry_points={
        "console_scripts": [
            "edm-train = diffusers_edm.commands.train:cli",
            "edm-generate = diffusers_edm.commands.generate:cli",
            "edm-fid = diffusers_edm.commands.fid:cli",
            "edm-convert = diffusers_edm.commands.convert:cli",
            "edm-phema = diffusers_edm.commands.reconstruct_phema:cli",
            "edm-tune = diffusers_edm.commands.tune_sampler:cli",
        ],
    },
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.35",
        "transformers>=4.40",
        "accelerate>=0.30",
        "datasets>=2.19",
        "huggingface_hub>=0.23",
        "safetensors>=0.4",
        "numpy",
        "Pillow",
        "PyYAML",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "tqdm",
        "optuna>=4.0",
        "matplotlib",
    ],
    extras_require={
        "test": TEST_REQUIRES, "tensorboard": ["tensorboard"], "wandb": ["wandb"],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
