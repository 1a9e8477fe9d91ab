"""Experiments that reproduce the papers' tables next to the published numbers (``make experiments``)."""
