"""`python -m ufm.simulate`: the command-line entry point (the body is ufm.cli.simulate)."""

import sys

from ufm.cli.simulate import main

if __name__ == "__main__":
    sys.exit(main())
