"""`python -m ufm.train`: the command-line entry point (the body is ufm.cli.train).

Importing this module (as `python -m`, a test or `pkgutil.walk_packages` do) sets the attribute `train` of the
package `ufm` to it, shadowing the library's `ufm.train` function; the module is therefore callable as that function,
so `ufm.train(cfg)` works whatever was imported before."""

import sys
import types

from ufm.cli.train import main


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ufm.api import train

        return train(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
else:  # imported (not run by python -m, which sets no package attribute)
    sys.modules[__name__].__class__ = _CallableModule
