"""Documented experiment configurations (one module per experiment)."""
