"""Lower-layer services every other layer may use, and which import nothing of the project above them:
colour conventions (colour.py), image files (images.py), writing files safely and caches (files.py),
training batches (batches.py) and pictures (visuals.py)."""
