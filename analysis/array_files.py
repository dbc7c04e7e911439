"""Arrays in files, opened without reading them whole, for `analysis.measure`; `MeasureError`, its one error.

- `.npy`: `read_npy` memory-maps the file (np.load(mmap_mode="r")).
- `.npz`: `npz_members` opens each member on demand. A member stored uncompressed (np.savez) is mapped in place:
  the zip's local file header gives where its .npy starts, np.lib.format reads that header, and np.memmap opens the
  array at the offset after it. A compressed member (np.savez_compressed) cannot be mapped and is read whole.
- `.pt`, and checkpoints: `load_tensors` runs torch.load(weights_only=True) on the CPU — tensors, numbers, strings
  and plain containers only, never unpickling arbitrary objects — with mmap=True where the file's format allows.

A file that cannot be read is one `MeasureError` line naming it; torch's advice to load with weights_only=False
(running arbitrary code from a file of unknown origin) is left out of it.

>>> import os, tempfile
>>> import numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
>>> np.savez(path, H=np.arange(6.0).reshape(3, 2))
>>> H = npz_members(path)["H"]()
>>> type(H).__name__, H[2].tolist()
('memmap', [4.0, 5.0])
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MeasureError", "load_tensors", "read_npy", "npz_members"]


class MeasureError(ValueError):
    """Bad input to the measurement (a missing or unreadable file, wrong shapes, labels that are not integers,
    an inconsistent K, no features): one line naming the file."""


def _quiet_torch_reason(e: BaseException) -> str:
    """Torch's message, on one line and shortened, unless it advises loading with weights_only=False (running
    arbitrary code from a file of unknown origin): then nothing."""
    text = " ".join(str(e).split())
    if not text or "weights_only" in text.lower() or "weights only" in text.lower():
        return ""
    return f" ({text[:200]})"


def load_tensors(path: str | os.PathLike, what: str) -> Any:
    """torch.load(weights_only=True) on the CPU, memory-mapped where the file's format allows it; `what` says what
    the file should hold, in the MeasureError of a file that holds anything else.

    >>> import os, tempfile
    >>> import torch
    >>> path = os.path.join(tempfile.mkdtemp(), "a.pt")
    >>> torch.save({"H": torch.ones(2, 3)}, path)
    >>> load_tensors(path, "a dict of tensors")["H"].shape
    torch.Size([2, 3])
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e).lower():
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # UnpicklingError (a global not allowed), EOFError, a torn or foreign file, …
        raise MeasureError(f"cannot read {path} with torch.load(weights_only=True): {what} (tensors, numbers, "
                           f"strings and plain containers only; numpy arrays belong in .npy/.npz files)"
                           f"{_quiet_torch_reason(e)}") from None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of a .npy file, memory-mapped (objects are not loaded).

    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "y.npy")
    >>> np.save(path, np.array([0, 1, 1]))
    >>> read_npy(path).tolist()
    [0, 1, 1]
    """
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, EOFError) as e:
        raise MeasureError(f"cannot read {path} as a .npy array ({' '.join(str(e).split())[:200]})") from None


def npz_members(path: str | os.PathLike) -> dict[str, Callable[[], Any]]:
    """The members of an .npz, each a function returning its array: a memory map for a member stored
    uncompressed (np.savez), the whole array for a compressed one (np.savez_compressed).

    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez_compressed(path, y=np.array([2, 0]))
    >>> members = npz_members(path)
    >>> sorted(members), type(members["y"]()).__name__
    (['y'], 'ndarray')
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if i.filename.endswith(".npy")]
    except OSError as e:
        raise MeasureError(f"cannot read {path}: {e.strerror or e}") from None
    except zipfile.BadZipFile as e:
        raise MeasureError(f"cannot read {path} as an .npz file ({e})") from None

    def bad(e: BaseException) -> MeasureError:
        return MeasureError(f"cannot read {path} as an .npz file ({' '.join(str(e).split())[:200]})")

    def whole(name: str) -> Callable[[], Any]:
        def read() -> Any:
            try:
                with np.load(path, allow_pickle=False) as z:
                    return z[name]
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
                raise bad(e) from None
        return read

    def mapped(info: zipfile.ZipInfo) -> Callable[[], Any]:
        def read() -> Any:
            try:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)  # the local file header: its name and extra field lengths end it
                    if len(local) < 30 or local[:4] != b"PK\x03\x04":
                        raise ValueError(f"no local header for member {info.filename}")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise ValueError(f"member {info.filename} holds Python objects, which are not loaded")
                if math.prod(shape) == 0:
                    return np.empty(shape, dtype=dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
            except (OSError, ValueError, EOFError, struct.error) as e:
                raise bad(e) from None
        return read

    out = {}
    for info in infos:
        stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1  # neither packed nor encrypted
        out[info.filename[:-4]] = mapped(info) if stored else whole(info.filename[:-4])
    return out
