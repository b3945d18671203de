"""The one retry loop (retry.py) and its users' words: the backoff grows by its factor up to
its cap, the last sleep ends at the deadline with one last try there, only the errors named
are retried, and a timeout says the last error. A fake clock stands in for time; one test
runs on the real one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcd_recovery import retry as retry_module
from etcd_recovery.errors import EtcdApiError, LabError, StepFailed, TransportError
from etcd_recovery.lab.lab import Lab
from etcd_recovery.live import (
    ERR_MEMBER_NOT_FOUND,
    ERR_TOO_MANY_LEARNERS,
    ERR_UNHEALTHY,
    EtcdRpcError,
)
from etcd_recovery.retry import Backoff, poll, retry

from .test_executor import World, executor

START = 1000.0


class FakeTime:
    """time.monotonic and time.sleep: a sleep moves the clock on by exactly its length."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.tries: list[float] = []   # the clock at each try (appended by ``never``)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def never(self, takes: float = 0.0) -> Callable[[], None]:
        """A function that is never done (returns None), each call taking ``takes`` s."""
        def fn() -> None:
            self.tries.append(self.now)
            self.now += takes
        return fn


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTime]:
    fake = FakeTime()
    monkeypatch.setattr(retry_module, "time", fake)
    yield fake


def rpc_error(details: str) -> EtcdRpcError:
    return EtcdRpcError("https://a:2379", "Cluster.MemberPromote", "UNKNOWN", details)


def test_the_backoff_grows_by_its_factor_up_to_its_cap(clock: FakeTime) -> None:
    with pytest.raises(TimeoutError):
        retry(clock.never(), 3.0, Backoff(first=0.05, factor=2.0, cap=0.5), done=bool)
    # 0.05 0.1 0.2 0.4 (0.75 slept), then the cap: 0.5 x 4 (2.75), then what is left: 0.25
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.25])


def test_the_last_sleep_ends_at_the_deadline_with_one_last_try_there(clock: FakeTime) -> None:
    with pytest.raises(TimeoutError):
        retry(clock.never(), 1.0, Backoff(first=0.3, factor=1.0, cap=0.3), done=bool)
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert clock.tries == pytest.approx([START, START + 0.3, START + 0.6, START + 0.9,
                                         START + 1.0])
    assert clock.now == START + 1.0


def test_a_slow_try_counts_against_the_deadline(clock: FakeTime) -> None:
    with pytest.raises(TimeoutError):
        retry(clock.never(takes=0.4), 1.0, Backoff(first=0.1, factor=1.0, cap=0.1), done=bool)
    # tries at 0, 0.5, 1.0 (each 0.4 s, then 0.1 s of sleep); the third ends at 1.4: give up
    assert clock.tries == pytest.approx([START, START + 0.5, START + 1.0])
    assert clock.sleeps == pytest.approx([0.1, 0.1])


def test_a_timeout_of_zero_tries_once(clock: FakeTime) -> None:
    with pytest.raises(TimeoutError):
        retry(clock.never(), 0.0, Backoff(0.02, 1.6, 0.1), done=bool)
    assert clock.tries == [START] and clock.sleeps == []


def test_poll_backs_off_from_20_ms_to_100_ms(clock: FakeTime) -> None:
    with pytest.raises(StepFailed):
        poll(clock.never(), 0.5, "x")
    assert clock.sleeps[:5] == pytest.approx([0.02, 0.032, 0.0512, 0.08192, 0.1])
    assert clock.sleeps[5:-1] == pytest.approx([0.1] * (len(clock.sleeps) - 6))
    assert sum(clock.sleeps) == pytest.approx(0.5) and clock.sleeps[-1] <= 0.1


def test_poll_returns_the_first_value_that_is_not_none(clock: FakeTime) -> None:
    values = iter([None, None, 0, 7])
    assert poll(lambda: next(values), 5, "x") == 0   # a falsy value is a value
    assert len(clock.sleeps) == 2


def test_poll_retries_etcd_and_transport_errors_and_says_the_last(clock: FakeTime) -> None:
    def fn() -> int | None:
        clock.tries.append(clock.now)
        n = len(clock.tries)
        if n == 1:
            raise TransportError("h-a", "connection reset")
        if n == 2:
            raise rpc_error("etcdserver: no leader")
        return None   # later tries: no error, the condition just does not hold

    with pytest.raises(StepFailed) as exc:
        poll(fn, 2, "etcd-1 to lead alone")
    assert str(exc.value) == ("timed out after 2 s waiting for etcd-1 to lead alone (last "
                              "error: https://a:2379: Cluster.MemberPromote: UNKNOWN: "
                              "etcdserver: no leader)")
    assert len(clock.tries) > 3


def test_a_poll_without_errors_says_none(clock: FakeTime) -> None:
    with pytest.raises(StepFailed) as exc:
        poll(clock.never(), 1.5, "every member to reach the same revision")
    assert str(exc.value) == ("timed out after 2 s waiting for every member to reach the "
                              "same revision")


def test_an_error_not_named_propagates_at_once(clock: FakeTime) -> None:
    def fn() -> int:
        raise StepFailed("not an etcd or a transport error")

    with pytest.raises(StepFailed, match="not an etcd"):
        poll(fn, 5, "x")
    assert clock.sleeps == []


def test_an_error_that_is_not_transient_propagates_at_once(clock: FakeTime) -> None:
    wrong = rpc_error("etcdserver: member not found")

    def fn() -> int:
        raise wrong

    with pytest.raises(EtcdApiError) as exc:
        retry(fn, 5, Backoff(0.05, 1.5, 0.15), retry_on=(EtcdApiError,),
              transient=lambda e: "unhealthy" in str(e))
    assert exc.value is wrong and clock.sleeps == []


def test_without_timed_out_the_last_error_is_raised(clock: FakeTime) -> None:
    errors = iter([rpc_error("first"), rpc_error("second"), rpc_error("third")])

    def fn() -> int:
        clock.now += 0.5
        raise next(errors)

    with pytest.raises(EtcdApiError, match="second"):
        retry(fn, 0.6, Backoff(0.05, 1.5, 0.15), retry_on=(EtcdApiError,))


def test_timed_out_builds_the_error_from_the_last_one(clock: FakeTime) -> None:
    seen: list[Exception | None] = []

    def failed(last: Exception | None) -> Exception:
        seen.append(last)
        return LabError("gave up")

    def fn() -> bool:
        if not seen and len(clock.sleeps) == 0:
            raise TransportError("h", "refused")
        return False

    with pytest.raises(LabError, match="gave up"):
        retry(fn, 1, Backoff(0.1, 2, 0.5), done=bool, retry_on=(TransportError,),
              timed_out=failed)
    assert len(seen) == 1 and str(seen[0]) == "h: refused"


def test_retry_api_retries_a_transient_error_then_returns(clock: FakeTime,
                                                          tmp_path: Path) -> None:
    ex = executor(World(), (), tmp_path)
    # one etcd calls passing (retryable), one retried because the caller names it
    answers: list[EtcdRpcError | None] = [rpc_error(ERR_UNHEALTHY),
                                          rpc_error(ERR_TOO_MANY_LEARNERS), None]

    def add() -> str:
        err = answers.pop(0)
        if err is not None:
            raise err
        return "added"

    assert ex.retry_api(add, 10, "adding b", retry_on=(ERR_TOO_MANY_LEARNERS,)) == "added"
    assert clock.sleeps == pytest.approx([0.05, 0.075])


def test_retry_api_returns_none_as_a_result(clock: FakeTime, tmp_path: Path) -> None:
    ex = executor(World(), (), tmp_path)
    assert ex.retry_api(lambda: None, 10, "removing b") is None
    assert clock.sleeps == []


def test_retry_api_fails_at_once_on_an_error_that_is_not_transient(clock: FakeTime,
                                                                   tmp_path: Path) -> None:
    ex = executor(World(), (), tmp_path)
    wrong = rpc_error(ERR_MEMBER_NOT_FOUND)

    def promote() -> str:
        raise wrong

    with pytest.raises(StepFailed) as exc:
        ex.retry_api(promote, 10, "promoting b", retry_on=(ERR_TOO_MANY_LEARNERS,))
    assert str(exc.value) == f"promoting b: {wrong}"
    assert exc.value.__cause__ is wrong and clock.sleeps == []


def test_retry_api_gives_up_at_its_timeout_with_the_last_error(clock: FakeTime,
                                                               tmp_path: Path) -> None:
    ex = executor(World(), (), tmp_path)
    raised: list[EtcdRpcError] = []

    def promote() -> str:
        raised.append(rpc_error(f"{ERR_UNHEALTHY} ({len(raised)})"))
        raise raised[-1]

    with pytest.raises(StepFailed) as exc:
        ex.retry_api(promote, 1, "promoting b")
    assert str(exc.value) == f"promoting b: {raised[-1]}"
    assert exc.value.__cause__ is raised[-1]
    assert clock.now == START + 1.0
    assert max(clock.sleeps) == pytest.approx(0.15)


def test_the_lab_wait_says_its_message_and_timeout(clock: FakeTime) -> None:
    with pytest.raises(LabError) as exc:
        Lab._wait(lambda: False, 15, "etcd-2: etcd still runs")
    assert str(exc.value) == "etcd-2: etcd still runs after 15 s"
    assert clock.sleeps[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])
    assert clock.now == START + 15
    Lab._wait(lambda: True, 15, "never said")


def test_on_the_real_clock_the_last_sleep_stops_at_the_deadline() -> None:
    # Each sleep would be 0.3 s; a loop that did not cut the last one would end at 0.6 s.
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        retry(lambda: False, 0.4, Backoff(first=0.3, factor=1.0, cap=0.3), done=bool)
    took = time.monotonic() - t0
    assert 0.4 <= took < 0.55, took
