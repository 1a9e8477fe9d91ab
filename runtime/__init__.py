"""Torch runtime: serving real (or random) model weights on real GPUs."""
