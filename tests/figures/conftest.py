"""Shared fixtures of the figures tests."""

import errno
import os
import tempfile

import pytest


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder the process cannot write in (mode 0555; as root, which writes anyway, the write probe's mkstemp
    fails as it would for a user); its mode is restored afterwards."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    yield ro
    ro.chmod(0o755)
