"""The scheduler path and the lazy path agree: for any activities in event-time order, interleaving scheduler
events (DelayedAccrual / PointsExpiry at due times, at arbitrary times, late, redelivered) changes nothing in
the outputs: same ledger (ids, amounts, kinds, occurred_at, seq, balances), notifications, coupons, tiers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState, state_from_dict, state_to_dict
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.program.model import Program
from loyalty_stream.scheduler.due_index import due_score, score_time
from loyalty_stream.scheduler.runner import due_event

from .conftest import activity, program_from

ZONES = ["Europe/London", "America/New_York", "UTC"]


pytestmark = pytest.mark.usefixtures("verify_running_balances")
STARTS = [datetime.fromisoformat("2024-10-20T10:00:00+00:00"),  # London and New York fall back
          datetime.fromisoformat("2024-02-25T22:30:00+00:00")]  # leap day, then spring forward


def make_program(zone: str, roll_on_zero: bool) -> Program:
    def rules(*actions: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": "set", "rules": [{"name": "r", "when": "true", "actions": list(actions)}]}]

    return program_from({
        "timezone": zone,
        "rounding": {"decimals": 0},
        "roll_expiry_on_zero_points": roll_on_zero,
        "tiers": [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 400}],
        "reminders": {"days_before": [3, 1]},
        "earn_conditions": [
            {"code": "BUY", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 1,
             "expiry": "ROLL"},
            {"code": "WELCOME", "allocation": {"type": "fixed", "points": 20}, "expiry": "DAYS"},
            {"code": "BONUS", "allocation": {"type": "fixed", "points": 7}, "expiry": "MONTH"},
        ],
        "expiry_conditions": [
            {"code": "ROLL", "based_on": "rolling_event_date", "unit": "days", "value": 6},
            {"code": "DAYS", "unit": "days", "value": 3},
            {"code": "MONTH", "unit": "months", "value": 0},
        ],
        "rule_sets": {
            "TransactionAdd": rules({"type": "allocate", "condition": "BUY"}),
            "Registration": rules({"type": "allocate", "condition": "WELCOME"}),
            "CustomerUpdate": rules({"type": "allocate", "condition": "BONUS"}),
            "DelayedAccrual": rules({"type": "convert"},
                                    {"type": "notify", "channel": "push", "template": "ok"},
                                    {"type": "issue_coupon", "series": "C"}),
        },
    })


Step = tuple[int, str, int]
steps_strategy = st.lists(
    st.tuples(st.integers(0, 3 * 24 * 60),
              st.sampled_from(["buy", "buy", "buy", "register", "update", "redeem", "unlock"]),
              st.integers(0, 1500)),
    min_size=1, max_size=20,
)


def build(steps: list[Step], start: datetime) -> list[Envelope]:
    at = start
    bills: list[str] = []
    out = []
    for index, (gap, kind, number) in enumerate(steps):
        at += timedelta(minutes=gap)
        when = at.isoformat()
        event_id = f"a{index}"
        if kind == "buy":
            bills.append(f"B{index}")
            out.append(activity("TransactionAdd", event_id, when, bill_number=bills[-1], amount=str(number)))
        elif kind == "register":
            out.append(activity("Registration", event_id, when))
        elif kind == "update":
            out.append(activity("CustomerUpdate", event_id, when))
        elif kind == "redeem":
            out.append(activity("PointsRedemption", event_id, when, points=str(max(1, number // 10))))
        else:
            bill = bills[number % len(bills)] if bills else "none"
            out.append(activity("PointsUnlock", event_id, when, bill_number=bill))
    return out


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def dump(self) -> dict[str, list[bytes]]:
        """Everything a downstream consumer sees, as bytes (so time-zone representations must agree too)."""
        return {
            name: [item.model_dump_json().encode() for o in self.outcomes for item in getattr(o, name)]
            for name in ("ledger", "notifications", "coupons", "tier_changes")
        }


def lazy_run(activities: list[Envelope], program: Program, horizon: datetime) -> tuple[Run, CustomerState]:
    run = Run()
    state: CustomerState | None = None
    for item in activities:
        outcome = apply(state, item, program, in_place=state is not None)
        run.add(outcome)
        state = outcome.state
    assert state is not None
    final = apply(state, due_event(state.program_id, state.customer_id, horizon, "PointsExpiry"), program)
    run.add(final)
    return run, final.state


class Choices:
    """Where the ticked run may deviate: hypothesis draws them, the fixed example always ticks."""

    def __init__(self, data: st.DataObject | None = None) -> None:
        self.data = data

    def flag(self) -> bool:
        return True if self.data is None else self.data.draw(st.booleans())

    def one_in(self, n: int) -> bool:
        return False if self.data is None else self.data.draw(st.integers(0, n - 1)) == 0

    def upto(self, high: int) -> int:
        return 0 if self.data is None else self.data.draw(st.integers(0, high))


def ticked_run(activities: list[Envelope], program: Program, horizon: datetime, choose: Choices
               ) -> tuple[Run, CustomerState]:
    """Like the scheduler: due events at (whole-second) due times, plus random extra, late and repeated ones;
    the state goes through the table codec and JSON after every record."""
    run = Run()
    state: CustomerState | None = None
    previous = activities[0].event_time

    def step(event: Envelope) -> None:
        nonlocal state
        outcome = apply(state, event, program)
        run.add(outcome)
        state = state_from_dict(orjson.loads(orjson.dumps(state_to_dict(outcome.state))))

    def ticks_until(limit: datetime, lazy_allowed: bool) -> None:
        nonlocal previous
        while state is not None:
            if lazy_allowed and choose.one_in(6) and limit > previous:
                seconds = choose.upto(int((limit - previous).total_seconds()))
                previous = previous + timedelta(seconds=seconds)
                step(due_event(state.program_id, state.customer_id, previous, "PointsExpiry"))
            due = lifecycle.next_transition(state, program)
            if due is None:
                return
            at = score_time(due_score(due.at))
            if at > limit or (lazy_allowed and not choose.flag()):
                return
            event = due_event(state.program_id, state.customer_id, at, due.kind)
            step(event)
            if choose.one_in(5):
                redelivered = apply(state, event, program)
                assert redelivered.duplicate and redelivered.ledger == []
            previous = at

    for item in activities:
        ticks_until(item.event_time, lazy_allowed=True)
        step(item)
        if choose.one_in(5):  # a scheduler event that lost the race with the activity
            assert state is not None
            late = due_event(state.program_id, state.customer_id, item.event_time - timedelta(hours=1),
                             "DelayedAccrual")
            stale = apply(state, late, program)
            assert stale.ledger == [] and stale.notifications == []
        previous = item.event_time
    ticks_until(horizon, lazy_allowed=False)
    assert state is not None
    step(due_event(state.program_id, state.customer_id, horizon, "PointsExpiry"))
    return run, state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy, zone=st.sampled_from(ZONES), start=st.sampled_from(STARTS),
       roll_on_zero=st.booleans(), data=st.data())
def test_scheduler_ticks_never_change_the_outputs(
    steps: list[Step], zone: str, start: datetime, roll_on_zero: bool, data: st.DataObject,
) -> None:
    program = make_program(zone, roll_on_zero)
    activities = build(steps, start)
    horizon = activities[-1].event_time + timedelta(days=60)
    lazy, lazy_state = lazy_run(activities, program, horizon)
    ticked, ticked_state = ticked_run(activities, program, horizon, Choices(data))
    assert ticked.dump() == lazy.dump()
    assert (ticked_state.current, ticked_state.promised, ticked_state.expired, ticked_state.seq) == (
        lazy_state.current, lazy_state.promised, lazy_state.expired, lazy_state.seq)
    assert lifecycle.next_due(lazy_state, program) is None
    assert lifecycle.next_due(ticked_state, program) is None


def test_a_known_interleaving_exercises_every_transition() -> None:
    """A fixed example of the property, so its value does not depend on what hypothesis happens to draw."""
    program = make_program("Europe/London", False)
    steps: list[Step] = [
        (0, "register", 0), (60, "buy", 1000), (60, "buy", 500), (2 * 24 * 60, "redeem", 300),
        (30, "update", 0), (3 * 24 * 60, "buy", 100), (10, "unlock", 2), (0, "buy", 50), (5, "unlock", 3),
    ]
    activities = build(steps, STARTS[0])
    horizon = activities[-1].event_time + timedelta(days=60)
    lazy, _ = lazy_run(activities, program, horizon)
    ticked, _ = ticked_run(activities, program, horizon, Choices())
    assert ticked.dump() == lazy.dump()
    kinds = {orjson.loads(entry)["kind"] for entry in lazy.dump()["ledger"]}
    assert kinds == {"earn", "promise", "convert", "expire", "redeem", "redate"}  # redate: the rolling lots
    assert {orjson.loads(n)["template"] for n in lazy.dump()["notifications"]} == {"ok", "points_expiring"}

