"""Read CIFAR's pickled batches without running code from them.

A pickle may name any importable callable (``os.system``, ...) and have the
unpickler call it. `RestrictedUnpickler` resolves only the globals that plain
arrays, bytes and strings are written with (found with ``pickletools.genops``):

- the official (Python 2) files: ``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray`` and ``numpy.dtype`` (plus
  ``numpy._core.multiarray._reconstruct``, the name numpy 2 writes);
- Python 3 at protocol 2, which has no opcode for ``bytes``:
  ``_codecs.encode(text, "latin1")`` for every bytes object and
  ``__builtin__.bytes()`` for an empty one. Both are replaced by functions
  that accept exactly those arguments (a str and latin-1; no argument) and
  build the bytes themselves, so nothing of the file's choosing runs;
- numpy at protocol 5: ``numpy._core.numeric._frombuffer`` (a plain array
  from a buffer, its dtype checked like any other).

Every other global is refused before anything is called, and object dtypes
are refused too, so an array cannot smuggle arbitrary objects in.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from ravit.data.base import describe_error

try:  # numpy >= 2 moved the module; the old name still resolves, with a warning
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list, or calls one outside its use.

    The message is the clause after "refused to unpickle: ".
    """

    @classmethod
    def references(cls, what: str) -> UnsafePickleError:
        return cls(f"it references {what}, which a data file never needs")


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError.references(f"object dtype {dtype} (arrays of Python objects)")
    return dtype


def _latin1_bytes(*args: Any) -> bytes:
    """`_codecs.encode` as Python 3 writes bytes at protocol 2: (str, "latin1") only."""
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise UnsafePickleError(
            f"it calls _codecs.encode{_brief(args)}; a data file only needs "
            "_codecs.encode(text, 'latin1') (how Python 3 writes bytes at protocol 2)"
        )
    return args[0].encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as Python 3 writes b"" at protocol 2: no argument only."""
    if args:
        raise UnsafePickleError(f"it calls bytes{_brief(args)}; a data file only needs bytes()")
    return b""


def _array_from_buffer(buf: Any, dtype: Any, shape: Any, order: Any, *rest: Any) -> np.ndarray:
    """numpy's protocol-5 `_frombuffer`, for plain (non-object) dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError.references(f"an array of dtype {dtype!r} (only plain dtypes)")
    return _frombuffer(buf, dtype, shape, order, *rest)


def _brief(args: tuple) -> str:
    return f"({', '.join(repr(a)[:20] for a in args)})"


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array reconstruction (see the module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError.references(f"global {module}.{name}") from None


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
                f"{path}: refused to unpickle: {err} (nothing from it was run); expected {expected}"
            ) from None
        except Exception as err:  # pickle raises many types for a broken stream
            raise ValueError(
                f"{path}: truncated or corrupt pickle ({describe_error(err)}); expected {expected}"
            ) from None
