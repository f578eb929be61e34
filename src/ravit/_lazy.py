"""Lazy package attributes (PEP 562), so that the torch-free parts import without torch.

The exported-model runtime (`ravit.runtime.exported`) runs on a device with
NumPy, Pillow and onnxruntime only. Importing it executes every package
`__init__` on its path (`ravit`, `ravit.runtime`, `ravit.exits`), so those
may not import torch eagerly: each one names its exports and the submodule
defining them, and a name's submodule is imported on first access.

No export may share its submodule's name: the import system binds every
submodule it loads on its package, which would hide the function behind its
module (hence `exits.simulation.simulate`, `runtime.prediction.predict`).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


class _LazyPackage(ModuleType):
    _lazy_exports: dict[str, str]  # export name -> submodule (relative) that defines it

    def __getattr__(self, name: str):  # only called when the normal lookup fails
        module = self._lazy_exports.get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{module}"), name)
        ModuleType.__setattr__(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_exports))


def lazy_exports(package: str, exports: dict[str, list[str]]) -> list[str]:
    """Make `package` import each name of `exports` (submodule -> names) on first access.

    Call it from the package's `__init__` (`__all__ = lazy_exports(__name__, {...})`);
    returns the sorted names, for `__all__`.
    """
    module = sys.modules[package]
    clash = sorted(set(exports) & {n for names in exports.values() for n in names})
    if clash:
        raise ValueError(f"{package}: exports {clash} share their submodule's name")
    module._lazy_exports = {name: sub for sub, names in exports.items() for name in names}
    module.__class__ = _LazyPackage
    return sorted(module._lazy_exports)
