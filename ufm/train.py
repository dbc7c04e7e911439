"""`python -m ufm.train`: the command-line entry point (the body is ufm.cli.train)."""

import sys

from ufm.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
