"""The shared z3 engine behind every proof in ``proofs/`` (SPEC §4).

A *statement* is built by a function ``build(values, ops, mutant)`` that applies the shipped code
(``verified_ta.products``, ``verified_ta.gradient``) to numpy object arrays. The same builder runs

- on arrays of z3 ``Real`` symbols: the engine asserts the hypotheses and the negation of
  ``lhs == rhs`` and expects ``unsat`` (the identity holds at that shape);
- on arrays of exact ``Fraction`` values read from a z3 model: the engine re-evaluates a refuted
  negative control (``mutant=True``) and confirms it is a real counterexample, with a float64 replay.

exp enters only through ``ops.exp``: an uninterpreted function in z3 with ground axiom instances
(``E(t) > 0`` for every application, plus whatever instances the builder states as hypotheses);
in a replay it is the model's interpretation of those same applications.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import z3

__all__ = [
    "Cut",
    "Canonical",
    "Dual",
    "lift",
    "parts",
    "purify",
    "Ops",
    "Statement",
    "Outcome",
    "SweptProof",
    "SweepResult",
    "ControlResult",
    "DEFAULT_RLIMIT",
    "check",
    "prove_statement",
    "run_control",
    "sweep",
    "shapes_up_to",
    "to_smt2",
    "query_smt2",
    "cvc5_recheck",
]

DEFAULT_RLIMIT = 50_000_000  # z3 resource units per query (deterministic, unlike the soft timeout)
DEFAULT_TIMEOUT_MS = 60_000


class Dual:
    """A dual number v + e·ε with ε² = 0 (forward-mode derivative; works on z3 terms and Fractions).

    exp extends to duals by E(v + eε) = E(v)·E(eε) = E(v)(1 + eε): the ground instance of
    E(a+b) = E(a)E(b) at (v, eε) together with E'(0) = 1 (see :meth:`Ops.exp_dual`).
    """

    __slots__ = ("v", "e")

    def __init__(self, v: Any, e: Any = 0) -> None:
        self.v, self.e = v, e

    @staticmethod
    def _lift(x: Any) -> "Dual":
        return x if isinstance(x, Dual) else Dual(x, 0)

    def __add__(self, o: Any) -> "Dual":
        o = Dual._lift(o)
        return Dual(self.v + o.v, self.e + o.e)

    __radd__ = __add__

    def __sub__(self, o: Any) -> "Dual":
        o = Dual._lift(o)
        return Dual(self.v - o.v, self.e - o.e)

    def __rsub__(self, o: Any) -> "Dual":
        return Dual._lift(o) - self

    def __neg__(self) -> "Dual":
        return Dual(-self.v, -self.e)

    def __mul__(self, o: Any) -> "Dual":
        o = Dual._lift(o)
        return Dual(self.v * o.v, self.v * o.e + self.e * o.v)

    __rmul__ = __mul__


def lift(a: np.ndarray) -> np.ndarray:
    """An array as :class:`Dual` entries with zero ε-part (z3 terms refuse to multiply a Dual from the left)."""
    return np.vectorize(Dual._lift, otypes=[object])(a)


def parts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an object array of :class:`Dual` into (values, ε-coefficients)."""
    v = np.vectorize(lambda x: Dual._lift(x).v, otypes=[object])(a)
    e = np.vectorize(lambda x: Dual._lift(x).e, otypes=[object])(a)
    return v, e


@dataclass
class Ops:
    """The non-polynomial operations a builder (or the shipped code, through :class:`proofs.symarray.SymArray`) may
    use: exp (uninterpreted in z3), division, maxima and fresh unknowns.

    Symbolic mode (``model is None``): ``exp`` applies the uninterpreted ``E`` and records the application;
    ``divide`` returns a fresh unknown w with the hypothesis w·den = num (every real execution with den ≠ 0
    satisfies it, so a proof under it covers the code); ``maximum`` returns a fresh unknown M, a *shift*: every
    later E(t) with M in t gets the ground instance E(t)·E(M) = E(t + M) of E(a+b) = E(a)E(b) (L6). Its
    hypotheses M ≥ each value and M equal to one of them are added only when ``faithful`` (negative controls, so
    a model is a real execution); a proof holds for every shift M. ``unknown`` makes fresh Real symbols.
    Replay mode (a model): exp reads the model's E, ``divide`` and ``maximum`` compute, unknowns read the model.
    """

    model: z3.ModelRef | None = None
    exp_fn: z3.FuncDeclRef = field(default_factory=lambda: z3.Function("E", z3.RealSort(), z3.RealSort()))
    exp_apps: list[z3.ArithRef] = field(default_factory=list)
    unknowns: dict[str, np.ndarray] = field(default_factory=dict)
    exp_table: dict[Fraction, Fraction] = field(default_factory=dict)
    facts: list[z3.BoolRef] = field(default_factory=list)
    faithful: bool = False
    as_float: bool = False
    cuts: list["Cut"] = field(default_factory=list)
    _pure: dict[int, z3.ArithRef] = field(default_factory=dict)
    _shifts: dict[int, z3.ArithRef] = field(default_factory=dict)
    _counter: dict[str, int] = field(default_factory=dict)
    canonical: "Canonical" = field(default_factory=lambda: Canonical())
    _softmax: list[tuple[np.ndarray, Any]] = field(default_factory=list)
    _softmax_keys: dict[tuple[int, ...], int] = field(default_factory=dict)
    softmax_trace: list[int] = field(default_factory=list)

    def sub(self) -> "Ops":
        """Ops for a cut: the same E, purification and names; its own facts and shifts."""
        return Ops(model=self.model, exp_fn=self.exp_fn, exp_apps=self.exp_apps, unknowns=self.unknowns,
                   exp_table=self.exp_table, faithful=self.faithful, as_float=self.as_float, canonical=self.canonical,
                   _pure=self._pure, _counter=self._counter)

    def cut(self, name: str, claims: Sequence[z3.BoolRef]) -> None:
        """Prove ``claims`` from the facts recorded so far in their own queries (a :class:`Cut`), then keep only the
        claims as facts. Controls (``faithful``) and replays take no cut: their model must stay an execution."""
        if self.symbolic and not self.faithful:
            self.cuts.append(Cut(name, list(self.facts), list(claims)))
            self.facts = list(claims)

    def softmax(self, rows: np.ndarray, normaliser: bool = False) -> Any:
        """The SPEC softmax of each row z (n × m): unknowns f, α with E(z_k) = α f_k, Σ_k f_k = 1, α > 0 (division
        free; α = ΣE(z) is the one solution). Rows equal as polynomials share their unknowns (E's congruence).
        Returns f, or (f, α) with ``normaliser``."""
        out = np.empty(rows.shape, dtype=object)
        alphas = np.empty(rows.shape[0], dtype=object)
        for j, row in enumerate(rows):
            if self.symbolic:
                key = tuple(self.canonical(t).get_id() for t in row)
                index = self._softmax_keys.setdefault(key, len(self._softmax_keys))
                self.softmax_trace.append(index)
            else:  # a replay takes the symbolic run's decisions (``softmax_trace`` copied from it)
                index = self.softmax_trace[self._counter.setdefault("softmax_row", 0)]
                self._counter["softmax_row"] += 1
            if index == len(self._softmax):
                f = np.array([self._scalar_unknown("sm") for _ in row], dtype=object)
                alpha = self._scalar_unknown("sm_alpha")
                if self.symbolic:
                    u = [self.exp(t) for t in row]
                    self.facts += [uk == alpha * fk for uk, fk in zip(u, f)] + [z3.Sum(list(f)) == 1, alpha > 0]
                self._softmax.append((f, alpha))
            out[j], alphas[j] = self._softmax[index]
        return (out, alphas) if normaliser else out

    def purified(self, app: z3.ArithRef) -> z3.ArithRef:
        """The fresh Real standing for the ground application ``app`` = E(t) (one per distinct term)."""
        key = app.get_id()
        if key not in self._pure:
            self._pure[key] = z3.Real(f"E!{len(self._pure)}")
        return self._pure[key]

    @property
    def symbolic(self) -> bool:
        return self.model is None

    def _fresh_name(self, prefix: str) -> str:
        k = self._counter.get(prefix, 0)
        self._counter[prefix] = k + 1
        return f"{prefix}!{k}"

    def _apply_e(self, t: Any) -> z3.ArithRef:
        app = self.exp_fn(t)
        self.exp_apps.append(app)
        return app

    def exp(self, t: Any) -> Any:
        """E(t): uninterpreted in z3 (with E(t) > 0 asserted by the engine); the model's value in a replay."""
        if self.symbolic:
            t = self.canonical(t)
            app = self._apply_e(t)
            if isinstance(t, z3.ExprRef) and self._shifts:
                for m in _constants(t):
                    if m.get_id() in self._shifts:  # L6: E(t)·E(M) = E(t + M), a ground instance
                        self.facts.append(app * self._apply_e(m) == self._apply_e(self.canonical(t + m)))
            return app
        if self.as_float:  # the argument carries rounding: take the nearest recorded argument
            key = min(self.exp_table, key=lambda a: abs(float(a) - float(t)))
            return float(self.exp_table[key])
        if t not in self.exp_table:
            raise KeyError(f"model has no E value at {t}")
        return self.exp_table[t]

    def exp_any(self, t: Any) -> Any:
        """:meth:`exp` on a number or a :class:`Dual`."""
        return self.exp_dual(t) if isinstance(t, Dual) else self.exp(t)

    def const(self, x: Fraction | int) -> Any:
        """An exact rational constant (z3 RealVal in z3 mode, Fraction in a replay)."""
        x = Fraction(x)
        if self.symbolic:
            return z3.Q(x.numerator, x.denominator)
        return float(x) if self.as_float else x

    def exp_dual(self, t: Dual) -> Dual:
        """E on a dual number: E(v + eε) = E(v)(1 + eε) (ground instance of E(a+b)=E(a)E(b), E'(0)=1)."""
        ev = self.exp(t.v)
        return Dual(ev, ev * t.e)

    def _scalar_unknown(self, prefix: str) -> Any:
        name = self._fresh_name(prefix)
        if self.symbolic:
            return z3.Real(name)
        v = _value(self.model.eval(z3.Real(name), model_completion=True))
        return float(v) if self.as_float else v

    def divide(self, num: Any, den: Any) -> Any:
        """num / den: a fresh unknown w with w·den = num in z3 (both parts for duals); computed in a replay."""
        if isinstance(den, (int, Fraction, float)) and not isinstance(den, bool):
            return num * (1 / (float(den) if self.as_float else Fraction(den)))
        dual = isinstance(num, Dual) or isinstance(den, Dual)
        if dual:
            num, den = Dual._lift(num), Dual._lift(den)
        if not self.symbolic:
            if not dual:
                return num / den
            w = num.v / den.v
            return Dual(w, (num.e - w * den.e) / den.v)
        if not dual:
            w = self._scalar_unknown("div")
            self.facts.append(w * den == num)
            return w
        w = Dual(self._scalar_unknown("div"), self._scalar_unknown("div_e"))
        self.facts += [w.v * den.v == num.v, w.e * den.v + w.v * den.e == num.e]
        return w

    def maximum(self, values: Sequence[Any]) -> Any:
        """max of ``values`` as a shift (see the class doc); a computed max in a replay (ε-part from the model)."""
        dual = any(isinstance(x, Dual) for x in values)
        vs = [Dual._lift(x).v for x in values] if dual else list(values)
        if self.symbolic:
            m = self._scalar_unknown("max")
            self._shifts[m.get_id()] = m
            if self.faithful:
                self.facts += [m >= x for x in vs] + [z3.Or([m == x for x in vs])]
        else:
            self._fresh_name("max")
            m = max(vs)
        return Dual(m, self._scalar_unknown("max_e")) if dual else m

    def unknown(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Fresh unknowns (symbols in z3, model values in a replay); constrain them with hypotheses."""
        if self.symbolic:
            arr = symbols(f"{name}!u", shape)
            self.unknowns[name] = arr
            return arr
        vals = model_values(self.model, symbols(f"{name}!u", shape))
        return vals.astype(float) if self.as_float else vals


class Canonical:
    """Polynomial z3 terms in one normal form (monomials sorted by atom), so that polynomially equal arguments of
    E become the same term, hence the same purified symbol: a ground instance of E's congruence.

    Caches hold the terms they key (z3 reuses the id of a freed term), for the lifetime of one statement.
    """

    def __init__(self) -> None:
        self._atoms: dict[int, z3.ExprRef] = {}
        self._done: dict[int, tuple[z3.ExprRef, z3.ExprRef]] = {}

    def __call__(self, t: Any) -> Any:
        if not isinstance(t, z3.ExprRef):
            return t
        hit = self._done.get(t.get_id())
        if hit is None:
            hit = self._done[t.get_id()] = (t, self._build(t))
        return hit[1]

    def _build(self, t: z3.ExprRef) -> z3.ExprRef:
        terms = []
        for m, c in sorted(self._polynomial(t).items()):
            term: Any = z3.Q(c.numerator, c.denominator) if (c != 1 or not m) else None
            for atom in m:
                term = self._atoms[atom] if term is None else term * self._atoms[atom]
            terms.append(term)
        return z3.Sum(terms) if len(terms) > 1 else terms[0] if terms else z3.RealVal(0)

    def _polynomial(self, t: Any) -> dict[tuple[int, ...], Fraction]:
        """t as {monomial (sorted atom ids): coefficient}; atoms are constants and other applications."""
        if z3.is_rational_value(t):
            v = Fraction(t.numerator_as_long(), t.denominator_as_long())
            return {(): v} if v else {}
        if z3.is_int_value(t):
            return {(): Fraction(t.as_long())} if t.as_long() else {}
        kind = t.decl().kind() if z3.is_app(t) else None
        if kind in (z3.Z3_OP_ADD, z3.Z3_OP_SUB):
            out: dict[tuple[int, ...], Fraction] = {}
            for k, child in enumerate(t.children()):
                sign = -1 if kind == z3.Z3_OP_SUB and k else 1
                for m, c in self._polynomial(child).items():
                    out[m] = out.get(m, Fraction(0)) + sign * c
            return {m: c for m, c in out.items() if c}
        if kind == z3.Z3_OP_UMINUS:
            return {m: -c for m, c in self._polynomial(t.children()[0]).items()}
        if kind == z3.Z3_OP_MUL:
            out = {(): Fraction(1)}
            for child in t.children():
                nxt: dict[tuple[int, ...], Fraction] = {}
                for m1, c1 in out.items():
                    for m2, c2 in self._polynomial(child).items():
                        m = tuple(sorted(m1 + m2))
                        nxt[m] = nxt.get(m, Fraction(0)) + c1 * c2
                out = {m: c for m, c in nxt.items() if c}
            return out
        if kind == z3.Z3_OP_DIV and z3.is_rational_value(t.children()[1]):
            d = t.children()[1]
            inv = Fraction(d.denominator_as_long(), d.numerator_as_long())
            return {m: c * inv for m, c in self._polynomial(t.children()[0]).items()}
        if kind == z3.Z3_OP_TO_REAL:
            return self._polynomial(t.children()[0])
        self._atoms[t.get_id()] = t
        return {(t.get_id(),): Fraction(1)}


def _constants(t: z3.ExprRef) -> list[z3.ExprRef]:
    """The uninterpreted constants occurring in a z3 term."""
    seen: dict[int, z3.ExprRef] = {}
    stack = [t]
    while stack:
        x = stack.pop()
        if z3.is_const(x) and x.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            seen[x.get_id()] = x
        else:
            stack.extend(x.children())
    return list(seen.values())


@dataclass
class Cut:
    """A lemma proved by its own queries (``hypotheses`` ⊢ every claim); the main query then relies on its
    conclusion in the form the builder states (e.g. the shipped softmax equals the SPEC softmax)."""

    name: str
    hypotheses: list[z3.BoolRef]
    claims: list[z3.BoolRef]


@dataclass
class Statement:
    """``lhs == rhs`` (arrays of equal shape), and every entry of ``claimed_positive`` > 0, under the hypotheses
    ``equalities`` (pairs) and ``positives`` (x > 0)."""

    lhs: Any
    rhs: Any
    equalities: list[tuple[Any, Any]] = field(default_factory=list)
    positives: list[Any] = field(default_factory=list)
    claimed_positive: list[Any] = field(default_factory=list)


def symbols(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of z3 Reals named ``name_i_j``."""
    out = np.empty(shape, dtype=object)
    for idx in itertools.product(*(range(s) for s in shape)):
        out[idx] = z3.Real("_".join([name, *map(str, idx)]))
    return out


def _value(v: z3.ExprRef) -> Fraction:
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    if z3.is_algebraic_value(v):
        # irrational model value: the nearest rational within 2^-60 (reported; replay then is approximate)
        return Fraction(v.approx(20).as_fraction())
    raise ValueError(f"unexpected model value {v}")


def model_values(model: z3.ModelRef, arr: np.ndarray) -> np.ndarray:
    """Exact model values of an array of z3 terms (Fraction object array)."""
    return np.vectorize(lambda t: _value(model.eval(t, model_completion=True)), otypes=[object])(arr)


def _flat(x: Any) -> list[Any]:
    return list(np.asarray(x, dtype=object).reshape(-1))


def _as_z3(x: Any) -> z3.ArithRef:
    return x if isinstance(x, z3.ExprRef) else z3.RealVal(x)


@dataclass
class Outcome:
    """One solver answer: ``unsat`` (proved), ``sat`` (with model) or ``unknown``."""

    status: str
    seconds: float
    model: z3.ModelRef | None = None
    reason: str = ""


def _hypotheses(st: Statement, ops: Ops) -> list[z3.BoolRef]:
    hyps = [_as_z3(a) == _as_z3(b) for a, b in st.equalities]
    hyps += [_as_z3(x) > 0 for x in st.positives]
    hyps += [app > 0 for app in ops.exp_apps]  # ground instances of E(x) > 0
    return hyps + list(ops.facts)


def _goal_negation(st: Statement) -> z3.BoolRef:
    lhs, rhs = np.asarray(st.lhs, dtype=object), np.asarray(st.rhs, dtype=object)
    if lhs.shape != rhs.shape:
        raise ShapeMismatch(f"lhs shape {lhs.shape} != rhs shape {rhs.shape}")
    if st.lhs is st.rhs:
        raise ValueError("a proof must not compare an expression with itself")
    return z3.Or([_as_z3(a) != _as_z3(b) for a, b in zip(_flat(lhs), _flat(rhs))]
                 + [_as_z3(x) <= 0 for x in st.claimed_positive])


class ShapeMismatch(ValueError):
    """The two sides have different shapes (a failed statement, not a solver question)."""


def _solver(rlimit: int, timeout_ms: int) -> z3.Solver:
    # eliminate defined variables (solve-eqs), bring everything to sum-of-monomials normal form
    # (this decides polynomial identities), and hand what remains to nlsat
    tactic = z3.Then("simplify", z3.With("solve-eqs", theory_solver=False), z3.With("simplify", som=True, som_blowup=1000), "tseitin-cnf", "nlsat")
    s = tactic.solver()
    s.set("rlimit", rlimit)
    s.set("timeout", timeout_ms)
    return s


def purify(formulas: Sequence[z3.BoolRef], ops: "Ops", congruence: bool = False) -> list[z3.BoolRef]:
    """Replace every ground application E(t) by a fresh Real ``E!k`` (nlsat has no uninterpreted functions).

    Proofs drop the congruence axioms (t = t' ⇒ E(t) = E(t')): fewer hypotheses, so ``unsat`` stays a
    proof. Negative controls add their ground instances (``congruence=True``) so a model is a function.
    """
    if not ops.exp_apps:
        return list(formulas)
    distinct = list({app.get_id(): app for app in ops.exp_apps}.values())
    pairs = [(app, ops.purified(app)) for app in distinct]
    out = [z3.substitute(f, *pairs) for f in formulas]
    if congruence:
        args = [z3.substitute(app.arg(0), *pairs) for app in distinct]
        out += [
            z3.Implies(args[a] == args[b], pairs[a][1] == pairs[b][1])
            for a in range(len(distinct)) for b in range(a + 1, len(distinct))
        ]
    return out


def check(
    formulas: Sequence[z3.BoolRef], ops: "Ops | None" = None, rlimit: int = DEFAULT_RLIMIT,
    timeout_ms: int = DEFAULT_TIMEOUT_MS, congruence: bool = False,
) -> Outcome:
    """Check satisfiability of ``formulas`` (E purified) under an rlimit (deterministic) and a soft timeout."""
    s = _solver(rlimit, timeout_ms)
    s.add(*(purify(formulas, ops, congruence) if ops else formulas))
    t0 = time.perf_counter()
    r = s.check()
    dt = time.perf_counter() - t0
    if r == z3.sat:
        return Outcome("sat", dt, s.model())
    if r == z3.unsat:
        return Outcome("unsat", dt)
    return Outcome("unknown", dt, reason=s.reason_unknown())


Builder = Callable[[dict[str, np.ndarray], Ops, bool], Statement]


@dataclass(frozen=True)
class SweptProof:
    """An identity proved at every shape with each dimension in 1..k (the shipped code, symbolically).

    ``shapes(dims)`` names the symbolic inputs and their shapes; ``build`` applies the shipped code;
    ``build(..., mutant=True)`` is the negative control described by ``control``, which must be ``sat``
    at ``control_dims``.
    """

    spec_ids: tuple[str, ...]
    name: str
    statement: str
    dims: tuple[str, ...]
    shapes: Callable[[dict[str, int]], dict[str, tuple[int, ...]]]
    build: Builder
    control: str
    control_dims: dict[str, int]
    default_max: int = 3
    dim_min: dict[str, int] = field(default_factory=dict)
    quick_caps: dict[str, int] = field(default_factory=dict)  # per-dimension caps of quick runs (check, default tests)

    def instantiate(self, dims: dict[str, int], mutant: bool = False) -> tuple[Statement, Ops, dict[str, np.ndarray]]:
        ops = Ops(faithful=mutant)
        values = {k: symbols(k, shp) for k, shp in self.shapes(dims).items()}
        return self.build(values, ops, mutant), ops, values


def shapes_up_to(
    dims: Sequence[str], k: int, dim_min: dict[str, int] | None = None, caps: dict[str, int] | None = None
) -> list[dict[str, int]]:
    """Every assignment of the named dimensions to lo..min(k, cap), by largest dimension, then lexicographically."""
    lo, cap = dim_min or {}, caps or {}
    ranges = [range(lo.get(d, 1), min(k, cap.get(d, k)) + 1) for d in dims]
    combos = sorted(itertools.product(*ranges), key=lambda c: (max(c), c))
    return [dict(zip(dims, c)) for c in combos]


def prove_statement(
    proof: SweptProof, dims: dict[str, int], rlimit: int = DEFAULT_RLIMIT, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> tuple[Outcome, Outcome]:
    """(proof outcome, vacuity outcome) at one shape: negation of lhs == rhs must be unsat, hypotheses sat."""
    st, ops, _ = proof.instantiate(dims)
    try:
        negation = _goal_negation(st)
    except ShapeMismatch as e:
        return Outcome("sat", 0.0, reason=str(e)), Outcome("sat", 0.0)
    for cut in ops.cuts:
        res, vac = prove_cut(cut, ops, rlimit, timeout_ms)
        if res.status != "unsat" or vac.status != "sat":
            return res, vac
    hyps = _hypotheses(st, ops)
    vac = check(hyps, ops, rlimit, timeout_ms, congruence=True) if hyps else Outcome("sat", 0.0, reason="no hypotheses")
    return check([*hyps, negation], ops, rlimit, timeout_ms), vac


def _components(hyps: list[z3.BoolRef], claims: list[z3.BoolRef]) -> list[tuple[list, list]]:
    """Split (hypotheses, claims) into groups sharing no uninterpreted constant (after E is purified)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    formulas = [*hyps, *claims]
    keys = []
    for f in formulas:
        ids = [c.get_id() for c in _constants(f)]
        for a in ids[1:]:
            parent[find(a)] = find(ids[0])
        keys.append(ids[0] if ids else None)
    groups: dict[Any, tuple[list, list]] = {}
    for k, f in enumerate(formulas):
        g = groups.setdefault(find(keys[k]) if keys[k] is not None else None, ([], []))
        (g[0] if k < len(hyps) else g[1]).append(f)
    return [g for g in groups.values() if g[1]]


def prove_cut(cut: "Cut", ops: Ops, rlimit: int, timeout_ms: int) -> tuple[Outcome, Outcome]:
    """Every claim of ``cut`` from its hypotheses (and E > 0), one query per independent group."""
    positives = [app > 0 for app in ops.exp_apps]
    hyps, claims = purify([*cut.hypotheses, *positives], ops), purify(cut.claims, ops)
    for group_hyps, group_claims in _components(hyps, claims):
        vac = check(group_hyps, None, rlimit, timeout_ms)
        if vac.status != "sat":
            return Outcome("unsat", vac.seconds, reason=f"cut {cut.name}: hypotheses {vac.status}"), vac
        res = check([*group_hyps, z3.Not(z3.And(group_claims))], None, rlimit, timeout_ms)
        if res.status != "unsat":
            return Outcome(res.status, res.seconds, res.model, f"cut {cut.name}: {res.reason or 'counterexample'}"), vac
    return Outcome("unsat", 0.0), Outcome("sat", 0.0)


@dataclass
class ControlResult:
    """A negative control: the mutated statement must be sat and its model a confirmed counterexample."""

    status: str
    confirmed: bool
    exact_gap: float
    float_gap: float
    hypothesis_residual: float
    seconds: float
    detail: str = ""


def _max_abs(xs: Iterable[Any]) -> float:
    return max((abs(float(x)) for x in xs), default=0.0)


def run_control(
    proof: SweptProof, dims: dict[str, int] | None = None, rlimit: int = DEFAULT_RLIMIT, timeout_ms: int = DEFAULT_TIMEOUT_MS
) -> ControlResult:
    """Refute the mutated statement and replay the model exactly (Fractions) and in numpy float64."""
    dims = dims or proof.control_dims
    t0 = time.perf_counter()
    st, ops, values = proof.instantiate(dims, mutant=True)
    for cut in ops.cuts:
        res, vac = prove_cut(cut, ops, rlimit, timeout_ms)
        if res.status != "unsat" or vac.status != "sat":
            return ControlResult(res.status, False, 0.0, 0.0, 0.0, time.perf_counter() - t0, res.reason)
    hyps = _hypotheses(st, ops)
    out = check([*hyps, _goal_negation(st)], ops, rlimit, timeout_ms, congruence=True)
    if out.status != "sat":
        return ControlResult(out.status, False, 0.0, 0.0, 0.0, time.perf_counter() - t0, out.reason)
    if exp_table(out.model, ops) is None:
        return ControlResult("sat", False, 0.0, 0.0, 0.0, time.perf_counter() - t0, "model's E is not a function")
    exact = replay(proof, out.model, ops, values, mutant=True, as_float=False)
    floats = replay(proof, out.model, ops, values, mutant=True, as_float=True)
    gap = _max_abs(np.asarray(exact.lhs, dtype=object).reshape(-1) - np.asarray(exact.rhs, dtype=object).reshape(-1))
    residual = _max_abs(a - b for a, b in exact.equalities)
    positive = all(x > 0 for x in exact.positives)
    fgap = _max_abs(np.asarray(floats.lhs, dtype=float).reshape(-1) - np.asarray(floats.rhs, dtype=float).reshape(-1))
    confirmed = gap > 0 and residual == 0 and positive and fgap > 0
    detail = f"lhs≠rhs by {gap:.3g} (float64 replay {fgap:.3g}) at " + ", ".join(f"{k}={v}" for k, v in dims.items())
    return ControlResult("sat", confirmed, gap, fgap, residual, time.perf_counter() - t0, detail)


def exp_table(model: z3.ModelRef, ops: Ops) -> dict[Fraction, Fraction] | None:
    """The model's E as a table argument → value, or None when it violates congruence or positivity."""
    table: dict[Fraction, Fraction] = {}
    for app in ops.exp_apps:
        arg = _value(model.eval(purify([app.arg(0)], ops)[0], model_completion=True))
        val = _value(model.eval(ops.purified(app), model_completion=True))
        if table.setdefault(arg, val) != val or val <= 0:
            return None
    return table


def replay(
    proof: SweptProof, model: z3.ModelRef, ops: Ops, values: dict[str, np.ndarray], mutant: bool, as_float: bool
) -> Statement:
    """Re-run the builder on the model's values (exact Fractions, or numpy float64 when ``as_float``)."""
    vals = {k: model_values(model, v) for k, v in values.items()}
    if as_float:
        vals = {k: v.astype(float) for k, v in vals.items()}
    rops = Ops(model=model, exp_table=exp_table(model, ops) or {}, as_float=as_float,
               softmax_trace=list(ops.softmax_trace))
    return proof.build(vals, rops, mutant)


@dataclass
class SweepResult:
    """Outcome of proving one identity at every shape up to ``max_size``."""

    status: str  # proved | failed | unknown
    largest_size: int  # largest k with every shape in 1..k proved (0 if none)
    shapes_proved: int
    seconds: float
    vacuity: str
    failure: str = ""
    smt2_example: str = ""


def sweep(
    proof: SweptProof,
    max_size: int,
    rlimit: int = DEFAULT_RLIMIT,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    on_shape: Callable[[dict[str, int]], None] | None = None,
    caps: dict[str, int] | None = None,
) -> SweepResult:
    """Prove ``proof`` at every shape up to ``max_size`` (and ``caps`` per dimension); stop at the first failure."""
    t0 = time.perf_counter()
    proved, largest, vac_status = 0, 0, "sat"
    shapes = shapes_up_to(proof.dims, max_size, proof.dim_min, caps)
    current = max(shapes[0].values()) if shapes else 0
    for dims in shapes:
        if on_shape:
            on_shape(dims)
        size = max(dims.values())
        if size > current:
            largest, current = current, size
        res, vac = prove_statement(proof, dims, rlimit, timeout_ms)
        if vac.status != "sat":
            why = "(vacuous)" if vac.status == "unsat" else f"({vac.reason})"
            return SweepResult("failed" if vac.status == "unsat" else "unknown", largest, proved,
                               time.perf_counter() - t0, vac.status,
                               f"hypotheses alone are {vac.status} at {dims} {why}")
        if res.status != "unsat":
            why = "counterexample" if res.status == "sat" else f"unknown ({res.reason})"
            status = "failed" if res.status == "sat" else "unknown"
            return SweepResult(status, largest, proved, time.perf_counter() - t0, vac_status,
                               f"{why} at {dims}{': ' + res.reason if res.reason and res.status == 'sat' else ''}")
        proved += 1
    largest = current
    return SweepResult("proved", largest, proved, time.perf_counter() - t0, vac_status)


def query_smt2(proof: SweptProof, dims: dict[str, int]) -> str:
    """The (purified) query of ``proof`` at ``dims`` as SMT-LIB 2: hypotheses and the negated identity."""
    st, ops, _ = proof.instantiate(dims)
    return to_smt2(purify([*_hypotheses(st, ops), _goal_negation(st)], ops))


def to_smt2(formulas: Sequence[z3.BoolRef]) -> str:
    """SMT-LIB 2 text of a query (for a second solver)."""
    s = z3.Solver()
    s.add(*formulas)
    return s.to_smt2()


def cvc5_recheck(smt2: str, logic: str = "QF_NRA", timeout_s: float = 60.0) -> str:
    """Re-check an exported query with cvc5: 'unsat' / 'sat' / 'unknown', or 'skipped' when cvc5 is absent.

    Uses the ``cvc5`` executable when on PATH, else the ``cvc5`` Python module's SMT-LIB parser.
    """
    import shutil
    import subprocess

    text = smt2 if "(set-logic" in smt2 else f"(set-logic {logic})\n{smt2}"
    exe = shutil.which("cvc5")
    if exe:
        r = subprocess.run([exe, "--lang", "smt2", f"--tlimit={int(timeout_s * 1000)}"], input=text,
                           capture_output=True, text=True, timeout=timeout_s + 10)
        last = r.stdout.strip().splitlines()[-1:] or ["unknown"]
        return last[0] if last[0] in ("sat", "unsat") else "unknown"
    try:
        import cvc5  # type: ignore[import-not-found]
    except ImportError:
        return "skipped"
    tm = cvc5.TermManager()
    solver = cvc5.Solver(tm)
    solver.setOption("tlimit", str(int(timeout_s * 1000)))
    parser = cvc5.InputParser(solver)
    parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, text, "verified-ta")
    sm = parser.getSymbolManager()
    result = None
    while True:
        cmd = parser.nextCommand()
        if cmd.isNull():
            break
        cmd.invoke(solver, sm)
    result = solver.checkSat()
    return "unsat" if result.isUnsat() else "sat" if result.isSat() else "unknown"
