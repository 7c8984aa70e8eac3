"""verified-ta: tensor attention you can trust (SPEC: ../shared/SPEC.md)."""

from .products import face_split, khatri_rao, kron, unvec, vec
from .interface import TensorAttention, tensor_attention
from .reference import tensor_attention_reference

__all__ = [
    "kron",
    "khatri_rao",
    "face_split",
    "vec",
    "unvec",
    "tensor_attention",
    "TensorAttention",
    "tensor_attention_reference",
]
__version__ = "0.1.0"
