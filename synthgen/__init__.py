"""synthgen: turn seed data and a task taxonomy into large, clean, diverse synthetic datasets."""

__version__ = "0.1.0"
