"""Hedui (核对): privacy-preserving household verification across government departments."""

__version__ = "0.1.0"
