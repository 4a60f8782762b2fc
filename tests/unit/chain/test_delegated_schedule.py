"""Which delegated subscriptions can never be delivered, from their fields and the chain time."""

from __future__ import annotations

from dataclasses import replace

from node.chain.delegated import schedule_refusal
from node.chain.subscription import UINT32_MAX, ZERO_ADDRESS, Subscription

NOW = 1_800_000_000
SUB = Subscription(
    id=None, owner="0x" + "12" * 20, active_at=0, period=0, frequency=1, redundancy=1,
    containers_hash=b"\x01" * 32, lazy=False, verifier=ZERO_ADDRESS, payment_amount=0,
    payment_token=ZERO_ADDRESS, wallet=ZERO_ADDRESS,
)  # fmt: skip


def test_deliverable_schedules_are_not_refused() -> None:
    assert schedule_refusal(SUB, NOW + 600, NOW) is None
    # Not active yet, or on its last interval: still deliverable.
    assert schedule_refusal(replace(SUB, active_at=NOW + 60, period=10, frequency=2), NOW + 600, NOW) is None
    assert schedule_refusal(replace(SUB, active_at=NOW - 15, period=10, frequency=2), NOW + 600, NOW) is None


def test_schedules_with_nothing_left_to_deliver_are_refused_with_the_reason() -> None:
    cases = [
        (replace(SUB, active_at=UINT32_MAX), ("Subscription is cancelled", {"active_at": UINT32_MAX})),
        (replace(SUB, frequency=0), ("Subscription has no intervals", {"frequency": 0})),
        (replace(SUB, redundancy=0), ("Subscription allows no deliveries", {"redundancy": 0})),
        (
            replace(SUB, active_at=NOW - 20, period=10, frequency=2),
            ("Subscription completed", {"frequency": 2, "interval": 3}),
        ),
    ]
    for sub, refusal in cases:
        assert schedule_refusal(sub, NOW + 600, NOW) == refusal
