"""`python -m ufm.sweep`: the command-line entry point (the body is ufm.cli.sweep)."""

import sys

from ufm.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
