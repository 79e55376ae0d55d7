#!/usr/bin/env python
"""Train an EDM model (Karras et al. 2022): `accelerate launch train_edm.py [--help]`.

Without arguments it trains a class-conditional model on scikit-learn's bundled 8x8 digits and writes an
`EDMPipeline` folder, sample grids and a model card to ./edm-digits. The command line is
`diffusers_edm.commands.train` (also installed as `edm-train`); this file only runs it.
"""

from diffusers_edm.commands.train import main

if __name__ == "__main__":
    main()
