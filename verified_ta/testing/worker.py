"""Run the conformance checks in worker processes, so that the implementation cannot take conform down with it.

Each worker (``multiprocessing`` spawn context: a fresh interpreter, the parent's ``sys.path``) imports the
implementation from its ``MODULE:CALLABLE`` target, probes it once and then runs the checks it is sent, one at a
time. The implementation's calls are marked in a shared double (:class:`~verified_ta.testing.checks.Implementation`'s
heartbeat), so the parent can tell a call that runs past ``timeout`` seconds from slow checking arithmetic. The
parent reports, instead of hanging or dying:

- a call past the timeout: TIMEOUT for that check (the worker is killed; the next check gets a fresh one);
- a worker that dies (segfault, ``os._exit``, out of memory): ERROR naming the exit code or signal and the case;
- a failed probe (exception, ``sys.exit``, a convention mistake): one ERROR for the whole run.

Workers print to stderr (their stdout is redirected), so ``--json -`` stays clean. With N workers the checks are
dealt out in order and the results come back in check order; each check is a deterministic function of the
configuration (seeded Hypothesis, fixed cases), so N workers report what one does.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from ..validation import check_positive_int
from .checks import PROBE, Check, ConformConfig, Measurement, check_by_name, load_impl
from .strategies import ConformCase

__all__ = ["run_isolated"]

#: seconds a worker may take to start, import the implementation and probe it when no call is in progress
START_TIMEOUT = 300.0
_POLL = 0.2


def _worker_main(conn: Connection, heartbeat: Any, target: str, search_path: str | None, config: ConformConfig) -> None:
    """The worker: load, probe, then run the checks named on ``conn`` until it sends None."""
    os.dup2(2, 1)  # the implementation's prints must not reach the parent's stdout (it may carry JSON)
    from .runner import CheckResult, exception_measurement, probe, run_check

    heartbeat.value = time.monotonic()  # importing the user's module is user code too
    try:
        impl = load_impl(target, search_path)
    except ValueError as exc:  # no such module or attribute: a usage error
        conn.send(("usage", str(exc)))
        return
    except Exception as exc:  # the module raised on import: the implementation's error
        conn.send(("probe", CheckResult(PROBE, "ERROR", exception_measurement(exc))))
        return
    finally:
        heartbeat.value = 0.0
    impl = dataclasses.replace(impl, heartbeat=heartbeat)
    info = probe(impl, config)
    conn.send(("probe", info))
    while True:
        name = conn.recv()
        if name is None:
            return
        result = run_check(check_by_name(name), impl, config, info, on_case=lambda case: conn.send(("case", case)))
        conn.send(("result", result))


@dataclass
class _Worker:
    """One worker process and what the parent knows of it."""

    process: Any
    conn: Connection
    heartbeat: Any
    started: float
    ready: bool = False
    check: Check | None = None
    case: ConformCase | None = None
    check_started: float = 0.0
    inbox: list[tuple[str, Any]] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


def _start(ctx: Any, target: str, search_path: str | None, config: ConformConfig) -> _Worker:
    parent, child = ctx.Pipe()
    heartbeat = ctx.Value("d", 0.0, lock=False)
    process = ctx.Process(target=_worker_main, args=(child, heartbeat, target, search_path, config), daemon=True)
    process.start()
    child.close()
    return _Worker(process, parent, heartbeat, time.monotonic())


def _death(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code} (os._exit or a crash in native code?)"


def run_isolated(
    target: str,
    config: ConformConfig,
    checks: Sequence[Check],
    *,
    timeout: float | None = None,
    workers: int = 1,
    search_path: str | Path | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run ``checks`` on the implementation ``target`` in ``workers`` processes (see the module docstring).

    ``timeout`` is the longest one call into the implementation (forward or backward) may take; None: no limit.
    ``on_result`` receives the results in check order. ValueError if the target cannot be loaded there.
    """
    from .runner import CheckResult

    check_positive_int("workers", workers)
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
    ctx = mp.get_context("spawn")
    path = None if search_path is None else str(search_path)
    pending = deque(checks)
    order = {c.name: i for i, c in enumerate(checks)}
    done: dict[int, Any] = {}
    emitted = 0
    pool: list[_Worker | None] = [None] * min(workers, max(1, len(checks)))

    def finish(result: Any) -> None:
        nonlocal emitted
        done[order[result.check.name]] = result
        while emitted in done:
            if on_result is not None:
                on_result(done[emitted])
            emitted += 1

    def fail_run(result: Any) -> list[Any]:
        for w in pool:
            if w is not None:
                w.stop()
        if on_result is not None:
            on_result(result)
        return [result]

    try:
        while pending or any(w is not None and w.check is not None for w in pool):
            for i, w in enumerate(pool):
                if w is None and pending:
                    pool[i] = _start(ctx, target, path, config)
                elif w is not None and w.ready and w.check is None and pending:
                    w.check, w.case, w.check_started = pending.popleft(), None, time.monotonic()
                    try:
                        w.conn.send(w.check.name)
                    except OSError:
                        pass  # it died: reported below with the check it was given
            live = [w for w in pool if w is not None]
            wait([w.conn for w in live] + [w.process.sentinel for w in live], timeout=_POLL)
            for i, w in enumerate(pool):
                if w is None:
                    continue
                failed = _drain(w, finish, CheckResult)
                if failed is not None:
                    return fail_run(failed)
                now = time.monotonic()
                call = w.heartbeat.value
                if not w.process.is_alive():
                    failed = _drain(w, finish, CheckResult)  # what it sent before it died
                    if failed is not None:
                        return fail_run(failed)
                    pool[i] = None
                    w.stop()
                    message = f"the worker process {_death(w.process)}"
                    if not w.ready:  # died while loading or probing: the run cannot start
                        text = f"{message} while importing or probing {target}"
                        return fail_run(CheckResult(PROBE, "ERROR", Measurement(math.inf, 0.0, text, raised=text)))
                    if w.check is not None:
                        finish(CheckResult(w.check, "ERROR", Measurement(
                            math.inf, 0.0, f"{message} while the implementation ran", raised=message), w.case,
                            seconds=now - w.check_started))
                elif timeout is not None and call and now - call > timeout:
                    pool[i] = None
                    w.stop()
                    reason = f"a call into the implementation ran past --timeout {timeout:g} s; the worker was stopped"
                    if w.check is None:
                        return fail_run(CheckResult(PROBE, "TIMEOUT", None, None, reason=reason))
                    finish(CheckResult(w.check, "TIMEOUT", None, w.case, seconds=now - w.check_started,
                                       reason=reason))
                elif not w.ready and not call and now - w.started > START_TIMEOUT:
                    pool[i] = None
                    w.stop()
                    return fail_run(CheckResult(PROBE, "TIMEOUT", None, None,
                                                reason=f"the worker did not start within {START_TIMEOUT:g} s"))
        for w in pool:
            if w is not None:
                w.conn.send(None)
                w.process.join(timeout=10)
    finally:
        for w in pool:
            if w is not None:
                w.stop()
    return [done[i] for i in sorted(done)]


def _drain(w: _Worker, finish: Callable[[Any], None], result_type: type) -> Any:
    """Read what the worker sent; a failed probe's result (ends the run), else None. ValueError: bad target."""
    try:
        while w.conn.poll():
            kind, payload = w.conn.recv()
            if kind == "usage":
                raise ValueError(payload)
            if kind == "probe":
                if isinstance(payload, result_type):
                    return payload
                w.ready = True
            elif kind == "case":
                w.case = payload
            elif kind == "result":
                finish(payload)
                w.check = None
    except (EOFError, OSError):
        pass  # the worker is gone: the caller sees it is not alive
    return None
