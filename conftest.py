"""Root pytest configuration, loaded for the unit tests and the notebooks alike.

Notebooks run by nbval inherit this process's environment (``--nbval-current-env``):
``NNBOOK_PROGRESS=off`` makes them draw no progress widgets, exactly as when
``tools/execute.py`` stored their outputs, so both sides compare equal.
"""
import os

os.environ.setdefault("NNBOOK_PROGRESS", "off")
