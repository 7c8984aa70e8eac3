"""verified-ta: tensor attention you can trust (SPEC: docs/spec.md; ID table: verified_ta.spec).

Names are imported on first use (PEP 562), so ``import verified_ta`` — and the pytest plugin that every
pytest session of an installing project loads — costs nothing until torch-backed code is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "kron": "products",
    "khatri_rao": "products",
    "face_split": "products",
    "vec": "products",
    "unvec": "products",
    "tensor_attention": "interface",
    "TensorAttention": "interface",
    "tensor_attention_reference": "reference",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'verified_ta' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
