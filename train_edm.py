#!/usr/bin/env python
"""Train an EDM model (Karras et al. 2022): `accelerate launch train_edm.py [--help]`.

Without arguments it trains a class-conditional model on scikit-learn's bundled 8x8 digits and writes an
`EDMPipeline` folder, a sample grid and a model card to ./edm-digits. The training code lives in
`diffusers_edm.training`; this file is only its command line.
"""

from diffusers_edm.training.args import parse_args
from diffusers_edm.training.trainer import train

if __name__ == "__main__":
    train(parse_args())
