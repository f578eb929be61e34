"""Read CIFAR's pickled batches without running code from them.

A pickle may name any importable callable (``os.system``, ...) and have the
unpickler call it. `RestrictedUnpickler` resolves only the three globals the
official CIFAR files reference (found with ``pickletools.genops`` on the real
files): ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype`` (plus ``numpy._core.multiarray._reconstruct``, the name numpy 2
writes). Every other global is refused before anything is called, and object
dtypes are refused too, so an array cannot smuggle arbitrary objects in.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from ravit.data.base import describe_error

try:  # numpy >= 2 moved the module; the old name still resolves, with a warning
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"object dtype {dtype} (arrays of Python objects)")
    return dtype


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array reconstruction (see the module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"global {module}.{name}") from None


def load_pickle(path: str | os.PathLike, expected: str) -> Any:
    """Unpickle `path` (Python 2 strings as bytes) with the restricted unpickler.

    Raises ValueError naming the file: for a pickle that would call anything
    beyond numpy array reconstruction (nothing from it is run), and for a
    truncated or corrupt file. `expected` says what the file should hold.
    """
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding="bytes").load()
        except UnsafePickleError as err:
            raise ValueError(
                f"{path}: refused to unpickle: it references {err}, which a data file never "
                f"needs (nothing from it was run); expected {expected}"
            ) from None
        except Exception as err:  # pickle raises many types for a broken stream
            raise ValueError(
                f"{path}: truncated or corrupt pickle ({describe_error(err)}); expected {expected}"
            ) from None
