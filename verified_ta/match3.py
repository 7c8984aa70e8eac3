"""Match3 (Sanford, Hsu and Telgarsky 2023) trained with softmax, exact tensor and polynomial tensor attention.

Task: tokens x_1..x_n in Z_M; the label of position i is 1 iff some j, k (any positions) have x_i + x_j + x_k ≡ 0
(mod M). One tensor-attention head sees the pairs (j, k) directly; standard attention sees one token at a time.

Model (one layer, the same for the three kinds, equal parameter counts): embedding → attention block → residual →
LayerNorm → MLP → one logit per position, binary cross-entropy, Adam. The tensor block projects to q, k1, k2, v1, v2
(H heads of head dim d, no bias) with tanh on q, k1, k2 (entries in (−1, 1): the bounded-entry regime, B = 1), calls
``tensor_attention(method="exact" | "poly", bound=1)`` and projects back. The softmax block projects to q, k, v of
width 3Hd/2 (tanh on q, k) so that both blocks have 6·D·H·d projection weights.

At sampled steps the poly run is audited: on the same batch, the exact path's gradients of ⟨dO, Att⟩ with the poly
run's own upstream dO are compared with the poly path's, entry by entry, against the certified per-call bound
(``poly_attention.gradient_bounds``) plus the float64 reference's own rounding term; every audit records
max(observed/bound) per input (q, k1, k2, v1, v2). Everything runs in float64 on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .fp_bounds import attention_rounding_bounds
from .interface import tensor_attention
from .poly_attention import gradient_bounds
from .reference import tensor_attention_reference
from .validation import check_positive_int

__all__ = ["KINDS", "Match3Config", "match3_batch", "Match3Model", "Curves", "train", "run", "plot"]

KINDS = ("softmax", "exact", "poly")
GRAD_NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")


@dataclass(frozen=True)
class Match3Config:
    """Sizes and schedule of one Match3 experiment (defaults: a few minutes for 3 kinds × 3 seeds on 2 CPU cores)."""

    n: int = 6
    modulus: int = 28  # P(label 1) ≈ 0.52 at n = 6
    embed_dim: int = 32
    heads: int = 4
    head_dim: int = 4
    hidden: int = 64
    batch: int = 64
    steps: int = 400
    lr: float = 1e-2
    eps: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    audit_every: int = 50
    eval_batches: int = 4

    def __post_init__(self) -> None:
        for name in ("n", "modulus", "embed_dim", "heads", "head_dim", "hidden", "batch", "steps", "audit_every",
                     "eval_batches"):
            check_positive_int(name, getattr(self, name))
        if (3 * self.heads * self.head_dim) % 2 or (3 * self.heads * self.head_dim // 2) % self.heads:
            raise ValueError(f"3·heads·head_dim/2 must be a multiple of heads; got heads={self.heads}, "
                             f"head_dim={self.head_dim}")
        if not (isinstance(self.lr, float) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite float > 0; got {self.lr!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty tuple of ints; got {self.seeds!r}")


def match3_batch(batch: int, n: int, modulus: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``(batch, n)`` uniform in Z_M and labels ``(batch, n)``: 1.0 iff x_i + x_j + x_k ≡ 0 for some j, k."""
    x = torch.randint(0, modulus, (batch, n), generator=generator)
    pair_sums = (x[:, :, None] + x[:, None, :]).reshape(batch, 1, n * n)
    hit = ((x[:, :, None] + pair_sums) % modulus == 0).any(-1)
    return x, hit.to(torch.float64)


class _SoftmaxBlock(nn.Module):
    def __init__(self, cfg: Match3Config) -> None:
        super().__init__()
        width = 3 * cfg.heads * cfg.head_dim // 2
        self.heads, self.head_dim = cfg.heads, width // cfg.heads
        self.q, self.k, self.v = (nn.Linear(cfg.embed_dim, width, bias=False) for _ in range(3))
        self.out = nn.Linear(width, cfg.embed_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        split = lambda t: t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(torch.tanh(self.q(h))), split(torch.tanh(self.k(h))), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim, dim=-1) @ v
        return self.out(att.transpose(1, 2).reshape(b, n, -1))


class _TensorBlock(nn.Module):
    """q, k1, k2 = tanh(linear) (entries in (−1, 1), so ``bound=1`` holds), v1, v2 = linear; :func:`tensor_attention`."""

    def __init__(self, cfg: Match3Config, method: str) -> None:
        super().__init__()
        width = cfg.heads * cfg.head_dim
        self.heads, self.head_dim, self.method, self.eps = cfg.heads, cfg.head_dim, method, cfg.eps
        self.q, self.k1, self.k2, self.v1, self.v2 = (nn.Linear(cfg.embed_dim, width, bias=False) for _ in range(5))
        self.out = nn.Linear(width, cfg.embed_dim)
        self.audit: Callable[..., None] | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        split = lambda t: t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        x = [split(torch.tanh(self.q(h))), split(torch.tanh(self.k1(h))), split(torch.tanh(self.k2(h))),
             split(self.v1(h)), split(self.v2(h))]
        if self.method == "poly":
            att = tensor_attention(*x, method="poly", eps=self.eps, bound=1.0)
        else:
            att = tensor_attention(*x)
        if self.audit is not None and att.requires_grad:
            inputs = [t.detach() for t in x]
            att.register_hook(lambda grad: self.audit(inputs, grad.detach()))
        return self.out(att.transpose(1, 2).reshape(b, n, -1))


class Match3Model(nn.Module):
    """Embedding → attention block (``kind`` in :data:`KINDS`) → residual → LayerNorm → MLP → logit per position."""

    def __init__(self, cfg: Match3Config, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        self.embed = nn.Embedding(cfg.modulus, cfg.embed_dim)
        self.block = _SoftmaxBlock(cfg) if kind == "softmax" else _TensorBlock(cfg, kind)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.embed_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + self.block(h)
        return self.mlp(self.norm(h)).squeeze(-1)


def _audit(cfg: Match3Config, records: list[dict[str, Any]], step: int) -> Callable[..., None]:
    """Backward hook body: the poly run's attention inputs and upstream dO → exact vs poly gradients vs their bound."""

    def audit(inputs: list[torch.Tensor], dout: torch.Tensor) -> None:
        x = [t.clone().requires_grad_() for t in inputs]
        with torch.enable_grad():
            poly, cert = tensor_attention(*x, method="poly", eps=cfg.eps, bound=1.0, return_certificate=True)
            g_poly = torch.autograd.grad((poly * dout).sum(), x)
            g_exact = torch.autograd.grad((tensor_attention_reference(*x) * dout).sum(), x)
        bounds = gradient_bounds(*inputs, dout, cert)
        flat = [t.reshape(-1, *t.shape[-2:]) for t in (*inputs, dout)]
        ref_fp = [attention_rounding_bounds(*(t[h] for t in flat[:5]), flat[5][h]) for h in range(flat[0].shape[0])]
        row: dict[str, Any] = {"step": step, "delta": float(cert.delta), "delta_derivative": float(cert.delta_derivative),
                               "degree": cert.degree, "rank": cert.rank}
        for name, gp, ge in zip(GRAD_NAMES, g_poly, g_exact):
            fp = torch.stack([b[name] for b in ref_fp]).reshape(gp.shape)
            total = bounds[name] + fp
            gap = (gp - ge).abs()
            row[name] = {"max_gap": float(gap.max()), "max_bound": float(total.max()),
                         "max_ratio": float((gap / total).max()), "held": bool((gap <= total).all())}
        records.append(row)

    return audit


def _evaluate(model: Match3Model, cfg: Match3Config, seed: int) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(10_000 + seed)
    losses, accs = [], []
    with torch.no_grad():
        for _ in range(cfg.eval_batches):
            x, y = match3_batch(cfg.batch, cfg.n, cfg.modulus, gen)
            logits = model(x)
            losses.append(float(nn.functional.binary_cross_entropy_with_logits(logits, y)))
            accs.append(float(((logits > 0).to(torch.float64) == y).to(torch.float64).mean()))
    return sum(losses) / len(losses), sum(accs) / len(accs)


@dataclass
class Curves:
    """One training run: per step the training loss and accuracy; held-out loss/accuracy at every audit step."""

    kind: str
    seed: int
    parameters: int
    seconds: float = 0.0
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)


def train(cfg: Match3Config, kind: str, seed: int) -> Curves:
    """Train one model (float64, CPU); the poly kind is audited every ``cfg.audit_every`` steps and at the last."""
    torch.manual_seed(seed)
    model = Match3Model(cfg, kind).to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    curves = Curves(kind, seed, sum(p.numel() for p in model.parameters()))
    start = time.perf_counter()
    for step in range(cfg.steps + 1):
        audited = kind == "poly" and (step % cfg.audit_every == 0 or step == cfg.steps)
        if audited:
            model.block.audit = _audit(cfg, curves.audits, step)
        x, y = match3_batch(cfg.batch, cfg.n, cfg.modulus, gen)
        logits = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        if audited:
            model.block.audit = None
        if step < cfg.steps:
            opt.step()
        curves.train_loss.append(float(loss.detach()))
        curves.train_accuracy.append(float(((logits.detach() > 0).to(torch.float64) == y).to(torch.float64).mean()))
        if step % cfg.audit_every == 0 or step == cfg.steps:
            ev_loss, ev_acc = _evaluate(model, cfg, seed)
            curves.eval_steps.append(step)
            curves.eval_loss.append(ev_loss)
            curves.eval_accuracy.append(ev_acc)
    curves.seconds = time.perf_counter() - start
    return curves


def run(cfg: Match3Config, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All kinds × seeds; returns the JSON-ready record (config, curves, audits, whether every bound held)."""
    say = progress or (lambda _msg: None)
    runs = []
    for seed in cfg.seeds:
        for kind in KINDS:
            curves = train(cfg, kind, seed)
            say(f"{kind:>7} seed {seed}: final eval accuracy {curves.eval_accuracy[-1]:.3f}, "
                f"loss {curves.eval_loss[-1]:.3f} ({curves.seconds:.1f} s)")
            runs.append(asdict(curves))
    audits = [a for r in runs for a in r["audits"]]
    worst = {name: max((a[name]["max_ratio"] for a in audits), default=None) for name in GRAD_NAMES}
    return {
        "config": asdict(cfg),
        "runs": runs,
        "audit_count": len(audits),
        "bounds_held": all(a[name]["held"] for a in audits for name in GRAD_NAMES),
        "worst_ratio": worst,
    }


def plot(record: dict[str, Any], path: str) -> None:
    """PNG: held-out accuracy and loss against step (mean over seeds, min–max band) per kind, and the audits'
    max observed/bound per gradient (every point must lie below 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = {"softmax": "tab:gray", "exact": "tab:blue", "poly": "tab:orange"}
    for kind in KINDS:
        runs = [r for r in record["runs"] if r["kind"] == kind]
        steps = runs[0]["eval_steps"]
        for ax, key in ((axes[0], "eval_accuracy"), (axes[1], "eval_loss")):
            series = torch.tensor([r[key] for r in runs])
            label = f"{kind} ({runs[0]['parameters']} params, {len(runs)} seeds)"
            ax.plot(steps, series.mean(0), color=colours[kind], label=label,
                    linestyle="--" if kind == "poly" else "-")
            ax.fill_between(steps, series.min(0).values, series.max(0).values, color=colours[kind], alpha=0.15)
    cfg = record["config"]
    axes[0].set(xlabel="step", ylabel="held-out accuracy",
                title=f"Match3: n = {cfg['n']}, M = {cfg['modulus']}, d = {cfg['head_dim']}, {cfg['heads']} heads")
    axes[1].set(xlabel="step", ylabel="held-out BCE loss", title="loss (poly dashed over exact)")
    axes[0].legend(fontsize=8)
    for name in GRAD_NAMES:
        pts = [(a["step"], a[name]["max_ratio"]) for r in record["runs"] for a in r["audits"]]
        axes[2].scatter([p[0] for p in pts], [p[1] for p in pts], s=12, label=name)
    axes[2].axhline(1.0, color="red", linewidth=1, label="bound")
    axes[2].set(xlabel="step", ylabel="max |poly − exact| / certified bound", yscale="log",
                title=f"gradient audits: {record['audit_count']} per-call checks, all held: {record['bounds_held']}")
    axes[2].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
