"""The single source of regionkit's version."""

__version__ = "0.1.0"
