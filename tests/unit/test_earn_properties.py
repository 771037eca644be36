"""Properties over random inputs: rounding never exceeds the configured decimals, splitting is exact, and caps
are never exceeded over random (also out-of-order) sequences of purchases."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.line_items import distribute
from loyalty_stream.engine.rounding import RoundingStrategy, quantum, round_points
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import LedgerKind
from tests.unit.conftest import activity, program_from

D = Decimal
amounts = st.decimals(
    min_value=D("-1000000"), max_value=D("1000000"), places=6, allow_nan=False, allow_infinity=False
)
strategies = st.sampled_from(list(RoundingStrategy))


@given(value=amounts, decimals=st.integers(0, 3), strategy=strategies)
def test_rounding_never_produces_more_decimals_than_configured(
    value: Decimal, decimals: int, strategy: RoundingStrategy
) -> None:
    result = round_points(value, decimals, strategy)
    assert result.as_tuple().exponent == -decimals
    step = quantum(decimals)
    assert abs(result - value) < step
    if strategy == RoundingStrategy.CEILING:
        assert result >= value
    elif strategy == RoundingStrategy.FLOOR:
        assert result <= value
    else:
        assert abs(result - value) <= step / 2 + step / 10  # nearest, up to the next-digit reading
    assert round_points(result, decimals, strategy) == result  # idempotent


@given(
    total_units=st.integers(0, 100000),
    decimals=st.integers(0, 3),
    weights=st.lists(
        st.decimals(min_value=0, max_value=10000, places=3, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=12,
    ),
)
def test_distribution_is_exact_and_close_to_proportional(
    total_units: int, decimals: int, weights: list[Decimal]
) -> None:
    step = quantum(decimals)
    total = D(total_units) * step
    shares = distribute(total, weights, step)
    assert sum(shares) == total
    assert all(share >= 0 and (share / step) == (share / step).to_integral_value() for share in shares)
    whole = sum(weights)
    if whole > 0:
        for share, weight in zip(shares, weights, strict=True):
            assert abs(share - total * weight / whole) < step


ZONE = ZoneInfo("Asia/Kolkata")
POINTS_CAP, TENDER_CAP, LITRES_CAP = D(300), D(5000), D(400)
PROGRAM = program_from(
    {
        "timezone": "Asia/Kolkata",
        "rounding": {"decimals": 2, "strategy": "ceiling"},  # ceiling: the strategy most tempted to overshoot
        "earn_conditions": [
            {"code": "PCT", "allocation": {"type": "prorated", "percent": "7.77"}},
            {"code": "FIX", "allocation": {"type": "fixed", "points": "13.333"}},
            {"code": "CARD", "allocation": {"type": "prorated", "percent": 3}},
            {"code": "FUEL", "allocation": {"type": "prorated", "percent": 2}},
        ],
        "rule_sets": {
            "TransactionAdd": [
                {
                    "name": "capped",
                    "caps": {"total_points": POINTS_CAP, "total_points_period": "calendar_month"},
                    "rules": [
                        {
                            "name": "r",
                            "actions": [
                                {"type": "allocate", "condition": "PCT", "line_items": {}},
                                {"type": "allocate", "condition": "FIX"},
                            ],
                        }
                    ],
                },
                {
                    "name": "card",
                    "caps": {
                        "tender_amount": {"modes": ["ABC"], "limit": TENDER_CAP, "period": "calendar_year"}
                    },
                    "rules": [
                        {
                            "name": "r",
                            "actions": [{"type": "allocate", "condition": "CARD", "tender_modes": ["ABC"]}],
                        }
                    ],
                },
                {
                    "name": "fuel",
                    "caps": {"tracker": {"field": "litres", "limit": LITRES_CAP, "period": "calendar_month"}},
                    "rules": [
                        {
                            "name": "r",
                            "actions": [
                                {
                                    "type": "allocate",
                                    "condition": "FUEL",
                                    "line_items": {"use_proportions": False},
                                }
                            ],
                        }
                    ],
                },
            ]
        },
    }
)

purchase = st.fixed_dictionaries(
    {
        "day": st.integers(0, 120),
        "minute": st.integers(0, 1439),
        "items": st.lists(
            st.tuples(
                st.decimals(min_value=1, max_value=3000, places=2, allow_nan=False, allow_infinity=False),
                st.one_of(st.none(), st.integers(0, 300)),
            ),
            min_size=0,
            max_size=4,
        ),
        "card_share": st.sampled_from([D(0), D("0.25"), D("0.5"), D(1)]),
    }
)


def _payload(n: int, spec: dict[str, Any]) -> dict[str, Any]:
    items = [
        {
            "item_id": str(i),
            "sku": "S",
            "amount": str(amount),
            **({"custom_fields": {"litres": litres}} if litres is not None else {}),
        }
        for i, (amount, litres) in enumerate(spec["items"])
    ]
    total = sum((amount for amount, _ in spec["items"]), D("100"))
    card = (total * spec["card_share"]).quantize(D("0.01"))
    tenders = [{"mode": "ABC", "amount": str(card)}, {"mode": "CASH", "amount": str(total - card)}]
    return {"bill_number": f"B{n}", "amount": str(total), "line_items": items, "tenders": tenders}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(purchases=st.lists(purchase, min_size=1, max_size=25))
def test_caps_are_never_exceeded_over_random_sequences(purchases: list[dict[str, Any]]) -> None:
    state: CustomerState | None = None
    start = datetime(2024, 11, 15, tzinfo=ZONE)
    capped_by_month: dict[tuple[int, int], Decimal] = defaultdict(lambda: D(0))
    card_by_year: dict[int, list[Decimal]] = defaultdict(list)
    for n, spec in enumerate(purchases):  # event times are random: late events are part of the test
        at = start + timedelta(days=spec["day"], minutes=spec["minute"])
        outcome = apply(
            state, activity("TransactionAdd", f"t{n}", at.isoformat(), **_payload(n, spec)), PROGRAM
        )
        state = outcome.state
        for entry in outcome.ledger:
            assert entry.kind == LedgerKind.EARN
            assert entry.amount > 0 and entry.amount.as_tuple().exponent >= -2
            if entry.desired_amount is not None:
                assert entry.desired_amount > entry.amount
            local = entry.occurred_at.astimezone(ZONE)
            if entry.condition_code in ("PCT", "FIX"):
                capped_by_month[(local.year, local.month)] += entry.amount
            if entry.condition_code == "CARD":
                card_by_year[local.year].append(entry.amount)
        assert all(total <= POINTS_CAP for total in capped_by_month.values())
        # 3 % of at most 5000 of card spend a year; ceiling rounding may add under a cent per award.
        assert all(
            sum(awards) <= TENDER_CAP * 3 / 100 + D("0.01") * len(awards) for awards in card_by_year.values()
        )
        for key, used in state.counters.items():
            limit = POINTS_CAP if ":points:" in key else TENDER_CAP if ":tender:" in key else LITRES_CAP
            assert D(0) <= used <= limit, key
    assert state is not None
    # Whatever was counted, the lots that counted it say so, exactly (what a return will release).
    for key, used in state.counters.items():
        if ":points:" in key:
            assert sum((lot.points for lot in state.lots if key in lot.cap_keys), D(0)) == used
        else:
            shares = [
                D(k.split("=")[1]) for lot in state.lots for k in lot.cap_keys if k.startswith(key + "=")
            ]
            assert sum(shares, D(0)) == used
