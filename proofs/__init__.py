"""z3 proofs of SPEC §4 (T1–T17), the §3 gradient chain (L1–L3), L6 and L8 (P30, P31), run by ``verified-ta prove``.

One module per family: :mod:`~proofs.products` (T1, T2, T12, T13), :mod:`~proofs.hadamard` (T3–T6),
:mod:`~proofs.vec_trick` (T7–T11), :mod:`~proofs.softmax` (T14–T16, §3 chain, L1–L3, L6, P18),
:mod:`~proofs.features` (L8, P30, P31 on the shipped feature maps), :mod:`~proofs.index_maps` (T17, all sizes),
:mod:`~proofs.induction` (T1, T3, T4, T5, T12, T13, all sizes).
Shared machinery: :mod:`~proofs.engine` (swept proofs on the shipped code) and :mod:`~proofs.allsizes`.
Importing a family module imports z3.
"""
