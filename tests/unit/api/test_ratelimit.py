from node.api.ratelimit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_wait_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=3, period=3.0, clock=clock)
    key = ("1.1.1.1", "/api/jobs")
    assert [buckets.take(key) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take(key)
    assert 0.9 < wait <= 1.0
    clock.now = 1.0
    assert buckets.take(key) == 0.0
    # Other clients and other routes have their own buckets.
    assert buckets.take(("2.2.2.2", "/api/jobs")) == 0.0
    assert buckets.take(("1.1.1.1", "/health")) == 0.0


def test_bucket_memory_is_bounded_under_many_clients() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=5, period=3600.0, clock=clock, max_buckets=1000)
    active = ("10.0.0.1", "/api/jobs")
    for n in range(20_000):
        buckets.take((f"198.51.{n // 256}.{n % 256}", "/api/jobs"))
        if n % 100 == 0:
            buckets.take(active)  # a client seen all along stays limited, not forgotten
        assert len(buckets) <= 1000
    assert buckets.take(active) > 0  # 200+ requests in an hour, 5 allowed
