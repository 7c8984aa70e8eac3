"""z3 proofs of SPEC §4 (T1–T17), the §3 objective and gradient (L1–L3), P18, L6 and L8 (P30, P31) on the shipped
code, run by ``verified-ta prove``.

Families: :mod:`~proofs.products` (T1, T2, T12, T13), :mod:`~proofs.hadamard` (T3–T6), :mod:`~proofs.vec_trick`
(T7–T11), :mod:`~proofs.softmax` (``softmax_rows``: P18, T15, L6; ``chain_terms``: T14, T16; §3 chain, L1–L3),
:mod:`~proofs.objective` (``objective_terms``, ``loss``, ``closed_form_gradient`` against SPEC §3 written out),
:mod:`~proofs.features` (L8, P30, P31), :mod:`~proofs.index_maps` (T17).
Machinery: :mod:`~proofs.engine` (swept proofs: symbolic entries, controls, replays, cuts), :mod:`~proofs.symarray`
(the array the shipped numpy/torch code runs on), :mod:`~proofs.tracing` (symbolic sizes), :mod:`~proofs.traced`
(all-sizes proofs of traced statements), :mod:`~proofs.induction` (the index lemma), :mod:`~proofs.allsizes`.
Importing a family module imports z3.
"""
