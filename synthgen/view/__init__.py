"""`synthgen view RUN_DIR`: a local record browser and curation tool for a run directory (see server.py)."""
