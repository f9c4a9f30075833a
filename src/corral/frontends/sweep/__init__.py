"""Sweeps: see corral.frontends.sweep.sweep."""
