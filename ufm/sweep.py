"""`python -m ufm.sweep`: the command-line entry point (the body is ufm.cli.sweep).

Importing this module sets the attribute `sweep` of the package `ufm` to it, shadowing the library's `ufm.sweep`
function; the module is therefore callable as that function, so `ufm.sweep(grid, out)` works whatever was imported
before."""

import sys
import types

from ufm.cli.sweep import main


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ufm.api import sweep

        return sweep(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
else:  # imported (not run by python -m, which sets no package attribute)
    sys.modules[__name__].__class__ = _CallableModule
