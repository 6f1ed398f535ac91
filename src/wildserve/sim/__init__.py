"""Cluster simulator: engines on a virtual clock behind a routing policy."""
