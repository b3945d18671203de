"""The one retry loop: call a function until it gives a wanted value, backing off between
tries, within a deadline.

The last sleep ends at the deadline, never after it, and one last try is made there: a wait
of 10 s with a 0.5 s step gives up at 10 s, not at 10.4 s. ``poll`` is the wait the plan's
waits and the verification use: it retries etcd's and the transport's errors and says the
last one when it gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import EtcdApiError, StepFailed, TransportError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Sleep ``first`` seconds after the first miss, each next sleep ``factor`` times the one
    before, never more than ``cap``."""

    first: float
    factor: float
    cap: float


def _any(_value: object) -> bool:
    return True


def retry(fn: Callable[[], T], timeout: float, backoff: Backoff, *,
          done: Callable[[T], bool] = _any,
          retry_on: tuple[type[Exception], ...] = (),
          transient: Callable[[Exception], bool] = _any,
          timed_out: Callable[[Exception | None], Exception] | None = None) -> T:
    """Call ``fn`` until it returns a value that ``done`` accepts (by default any), and return
    that value.

    An exception of a ``retry_on`` type that ``transient`` accepts is a miss, kept as the last
    error; any other exception propagates at once. A miss at or after ``timeout`` seconds from
    the call raises ``timed_out(last error or None)``; without ``timed_out``, the last error
    itself (TimeoutError when there was none)."""
    deadline = time.monotonic() + timeout
    delay = backoff.first
    last: Exception | None = None
    while True:
        try:
            value = fn()
        except retry_on as exc:
            if not transient(exc):
                raise
            last = exc
        else:
            if done(value):
                return value
        now = time.monotonic()
        if now >= deadline:
            if timed_out is not None:
                raise timed_out(last)
            if last is not None:
                raise last
            raise TimeoutError(f"no result within {timeout:.0f} s")
        time.sleep(min(delay, deadline - now))
        delay = min(backoff.cap, delay * backoff.factor)


def poll(fn: Callable[[], T | None], timeout: float, what: str, first: float = 0.02,
         cap: float = 0.1) -> T:
    """Call ``fn`` until it returns something other than None, backing off from ``first`` to
    ``cap`` seconds; raise StepFailed after ``timeout``."""

    def failed(last: Exception | None) -> Exception:
        extra = f" (last error: {last})" if last else ""
        return StepFailed(f"timed out after {timeout:.0f} s waiting for {what}{extra}")

    value = retry(fn, timeout, Backoff(first, 1.6, cap), done=lambda v: v is not None,
                  retry_on=(EtcdApiError, TransportError), timed_out=failed)
    assert value is not None
    return value
