"""Example notebooks a researcher starts from; run them with `python -m examples.execute` (see execute.py).

Not installed with the package (a generic top-level name): run from the repository root."""
