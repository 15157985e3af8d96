"""synthgen's version (a leaf module: what records it, the run marker and export folders, imports nothing else)."""

__version__ = "0.1.0"
