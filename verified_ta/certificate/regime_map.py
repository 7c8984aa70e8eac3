"""``verified-ta certify --map``: the regime map over a (B, n) grid for given d and ε (SPEC L11; docs/certificate.md §8).

Each cell is one certify call (``build_certificate`` within its own time limit), run in parallel over processes:
the least certified degree (or the proved lower bound when nothing was certified), the rank, the features' memory
and whether the fast path beats exact there (certified, fits in memory, and cheaper than exact in the cost model).
The heatmap draws the paper's threshold M = s·d·B³ = ln n (B³ = ln n at s = 1/d): L11 is asymptotic, so the map
is a finite-n picture of it, not a proof.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from .build import build_certificate
from .inputs import CertifyInputs, scale_upper

__all__ = ["map_cell", "regime_map", "map_table", "write_heatmap"]

_KINDS = {0: "fast", 1: "missed", 3: "open"}


def _kind(exit_code: int, costs: dict[str, Any]) -> str:
    """fast (certified, fits, pays), memory (features over the limit), exact (exact is cheaper), missed, open."""
    if exit_code == 4:
        return "memory" if not costs["fits_memory"] else "exact"
    return _KINDS.get(exit_code, "open")


def map_cell(inputs: CertifyInputs) -> dict[str, Any]:
    """One cell: a certify call reduced to what the map shows."""
    cert = build_certificate(inputs)
    costs = cert.costs
    certified = cert.polynomial is not None
    return {
        "B": inputs.B,
        "n": inputs.n,
        "verdict": cert.verdict,
        "exit_code": cert.exit_code,
        "kind": _kind(cert.exit_code, costs),
        "degree": cert.polynomial.degree if certified else None,
        "degree_lower_bound": cert.plan["degree_lower_bound"],
        "rank": costs["rank"],
        "rank_is_lower_bound": not certified,
        "memory_bytes": costs["fast_memory_bytes"],
        "fits_memory": costs["fits_memory"],
        "fast_pays": costs["fast_pays"],
        "crossover_n": costs["crossover_n"],
        "fast_beats_exact": cert.exit_code == 0,
        "message": cert.message,
        "seconds": cert.unverified["seconds"]["total"],
    }


def _context():
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def regime_map(
    d: int,
    eps: float,
    b_grid: Sequence[float],
    n_grid: Sequence[int],
    *,
    jobs: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Every (B, n) cell of the grid (``options``: the other ``CertifyInputs`` fields), computed by ``jobs`` processes
    (default: one per CPU). ValueError for an invalid grid value, before any work."""
    base = CertifyInputs(B=1.0, n=2, d=d, eps=eps, **options)
    cells = [replace(base, B=float(B), n=int(n)) for B in b_grid for n in n_grid]  # validates every value
    workers = max(1, min(jobs or os.cpu_count() or 1, len(cells)))
    if workers == 1:
        results = [map_cell(c) for c in cells]
    else:
        with ProcessPoolExecutor(workers, mp_context=_context()) as pool:
            results = list(pool.map(map_cell, cells))
    s = scale_upper(base.scale, d)
    threshold = [(math.log(n) / float(s * d)) ** (1 / 3) if n > 1 else None for n in n_grid]
    settings = {k: v for k, v in asdict(base).items() if k not in ("B", "n")}
    return {"settings": settings, "B_grid": list(map(float, b_grid)), "n_grid": list(map(int, n_grid)),
            "threshold_B": threshold, "threshold": "M = s·d·B³ = ln n (B³ = ln n at s = 1/d); L11 is asymptotic",
            "cells": results}


def map_table(result: dict[str, Any]):
    """A rich table: rows B, columns n; each cell "degree / kind" (degree ≥ lower bound when nothing was certified)."""
    from rich.table import Table

    s = result["settings"]
    table = Table(title=f"regime map: d = {s['d']}, ε = {s['eps']:g}, {s['target']}, {s['dtype']}, s = {s['scale']} "
                        "(g = least certified degree, g>= the proved lower bound; fast = certified, fits and cheaper "
                        "than exact; memory = features over the limit; exact = exact is cheaper; missed/open = no "
                        "certificate: target missed / inconclusive)")
    table.add_column("B \\ n")
    for n in result["n_grid"]:
        table.add_column(f"{n:.0e}" if n >= 10**5 else str(n), justify="right")
    by_key = {(c["B"], c["n"]): c for c in result["cells"]}
    for B in result["B_grid"]:
        row = []
        for n in result["n_grid"]:
            c = by_key[(B, n)]
            degree = f"g={c['degree']}" if c["degree"] is not None else f"g>={c['degree_lower_bound']}"
            row.append(f"{degree} {c['kind']}")
        table.add_row(f"{B:g}", *row)
    return table


def write_heatmap(result: dict[str, Any], path: str | Path) -> None:
    """A heatmap PNG of log10(rank) over the grid, each cell labelled, with the threshold curve B³ ≈ ln n."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("the heatmap needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bs, ns = result["B_grid"], result["n_grid"]
    by_key = {(c["B"], c["n"]): c for c in result["cells"]}
    ranks = np.array([[math.log10(by_key[(B, n)]["rank"]) for n in ns] for B in bs])
    fig, ax = plt.subplots(figsize=(1.3 * len(ns) + 3, 0.7 * len(bs) + 2))
    image = ax.imshow(ranks, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="log10 rank r = C(g+d, d)")
    for i, B in enumerate(bs):
        for j, n in enumerate(ns):
            c = by_key[(B, n)]
            degree = f"g={c['degree']}" if c["degree"] is not None else f"g≥{c['degree_lower_bound']}"
            ax.text(j, i, f"{degree}\n{c['kind']}", ha="center", va="center", fontsize=7, color="white",
                    fontweight="bold" if c["kind"] == "fast" else "normal",
                    bbox={"facecolor": "black", "alpha": 0.35, "edgecolor": "white", "linewidth": 1.5}
                    if c["kind"] == "fast" else None)
    order = np.argsort(bs)
    xs, ys = [], []
    for j, b_star in enumerate(result["threshold_B"]):
        if b_star is not None:
            xs.append(j)
            ys.append(float(np.interp(b_star, np.array(bs)[order], order, left=-0.5, right=len(bs) - 0.5)))
    ax.plot(xs, ys, "r--", linewidth=2, label="threshold B³ = ln n (M = ln n)")
    ax.set_xticks(range(len(ns)), [f"{n:.0e}" if n >= 10**5 else str(n) for n in ns])
    ax.set_yticks(range(len(bs)), [f"{B:g}" for B in bs])
    s = result["settings"]
    ax.set_xlabel("n")
    ax.set_ylabel("B (entry bound)")
    ax.set_title(f"certified fast path, d = {s['d']}, ε = {s['eps']:g} ({s['target']}, {s['dtype']}); "
                 "finite-n heuristic of L11", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
