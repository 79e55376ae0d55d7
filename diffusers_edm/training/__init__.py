"""Training utilities for EDM (Karras et al. 2022) used by `train_edm.py`."""
