"""A run's files: atomic writes, per-image outputs, shared run outputs, comparison grids and
reading a run directory back."""
