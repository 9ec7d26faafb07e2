"""ServerClock: the offset to the server's clock, from the least delayed of recent samples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from monque.clock import ServerClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def measure(clock: ServerClock, local: list[datetime], rtt: float, server: datetime) -> float:
    """One ``hello`` that takes ``rtt`` seconds and reports ``server`` as its localTime."""
    op = clock.measure()
    next(op)
    local[0] += timedelta(seconds=rtt)
    try:
        op.send({"localTime": server})
    except StopIteration as done:
        return float(done.value)
    raise AssertionError("measure() asked for more than one command")


def test_a_slow_round_trip_does_not_move_the_offset() -> None:
    local = [T0]
    clock = ServerClock(lambda: local[0])
    # Server 2 s ahead, asked over a 10 ms round trip: offset 2 s (midpoint estimate).
    assert measure(clock, local, 0.010, T0 + timedelta(seconds=2.005)) == 2.0
    # Under load: 400 ms round trip, server answered right at its start (error 200 ms).
    local[0] += timedelta(seconds=1)
    start = local[0]
    assert measure(clock, local, 0.400, start + timedelta(seconds=2)) == 2.0
    assert clock.now() == (local[0] + timedelta(seconds=2)).replace(
        microsecond=(local[0] + timedelta(seconds=2)).microsecond // 1000 * 1000
    )


def test_a_clock_step_is_adopted_once_older_samples_age_out() -> None:
    local = [T0]
    clock = ServerClock(lambda: local[0])
    measure(clock, local, 0.002, T0 + timedelta(seconds=0.001))
    offsets = []
    for _ in range(8):  # the host clock was stepped back 5 s: the server now reads 5 s ahead
        start = local[0]
        offsets.append(measure(clock, local, 0.004, start + timedelta(seconds=5.002)))
    assert offsets[0] == 0.0  # the old, tighter sample still wins
    assert offsets[-1] == 5.0
