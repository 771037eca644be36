"""A deterministic, realistic activity workload for the engine and replay benchmarks.

`generate(n, m, seed=...)` gives `n` encoded activity records (JSON bytes, keyed by customer id) over `m`
customers of `programs/examples/bench.yaml`, as `replay.runner.Record`s on the logical input topics:

* ~70 % purchases of 3 line items (categories, fuel litres, card / cash / split tenders, channels),
* ~10 % engagement events from the event-points catalogue,
* ~10 % redemptions (some paying for one of the customer's bills),
* ~5 % returns of an earlier bill of that customer (the whole bill, or one line, sometimes part of it),
* ~5 % registrations (each customer registers at most once).

Event times move forward over `days` (default 120), so delayed accrual converts (7 days), event points and
welcome points expire (30 / 60 days), reminders fall due and monthly caps roll over. One customer in a
hundred is a "regular" who gets a fifth of the traffic, so some states carry many lots. The same arguments
always give the same bytes (a seeded `random.Random`, no wall clock, no set iteration).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from loyalty_stream.program.loader import ProgramRegistry, read_program_file
from loyalty_stream.replay.runner import Record

ROOT = Path(__file__).resolve().parents[1]
BENCH_PROGRAM = ROOT / "programs" / "examples" / "bench.yaml"
PROGRAM_ID = "bench"
ZONE = ZoneInfo("Asia/Kolkata")
START = datetime(2024, 1, 1, 9, 0, tzinfo=ZONE)

MIX: tuple[tuple[str, float], ...] = (
    ("purchase", 0.70), ("engagement", 0.10), ("redemption", 0.10), ("return", 0.05), ("registration", 0.05),
)
CATEGORIES = (("grocery", 40), ("apparel", 20), ("electronics", 10), ("fuel", 20), ("home", 10))
CHANNELS = (("instore", 60), ("online", 30), ("app", 10))
EVENTS = ("page_view", "product_view", "search", "add_to_cart", "begin_checkout", "qr_scan", "message_open",
          "bid_placed", "bid_won", "draw_entry", "appointment_booking", "queue_entry")
RETURN_WINDOW_DAYS = 30
"""Returns pick a bill bought within this many days (the program's return window is longer)."""


def load_registry(path: Path = BENCH_PROGRAM) -> ProgramRegistry:
    return ProgramRegistry([read_program_file(path)])


def _weighted(rng: Random, table: tuple[tuple[str, int], ...]) -> str:
    total = sum(weight for _, weight in table)
    pick = rng.randrange(total)
    for name, weight in table:
        if pick < weight:
            return name
        pick -= weight
    raise AssertionError("unreachable")  # pragma: no cover


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(slots=True)
class _Bill:
    number: str
    customer: str
    day: float
    items: list[str]
    quantities: dict[str, int]
    returned: set[str] = field(default_factory=set)
    whole: bool = False


class _Generator:
    def __init__(self, activities: int, customers: int, seed: int, days: float, partitions: int,
                 program_id: str) -> None:
        self.n = activities
        self.m = customers
        self.rng = Random(seed)
        self.days = days
        self.partitions = partitions
        self.program_id = program_id
        self.regulars = max(1, customers // 100)
        self.unregistered = list(range(customers))
        self.rng.shuffle(self.unregistered)
        self.bills: list[_Bill] = []
        self.bills_of: dict[str, list[_Bill]] = {}
        self.buyers: list[str] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.records: list[Record] = []

    def customer(self) -> str:
        rng = self.rng
        index = rng.randrange(self.regulars) if rng.random() < 0.2 else rng.randrange(self.m)
        return f"cust-{index:07d}"

    def emit(self, topic: str, kind: str, index: int, at: datetime, customer: str,
             payload: dict[str, Any]) -> None:
        message = {"type": kind, "event_id": f"ev-{index:08d}", "program_id": self.program_id,
                   "customer_id": customer, "event_time": at.isoformat(), "payload": payload}
        key = customer.encode()
        partition = zlib.crc32(key) % self.partitions
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        timestamp = int(at.timestamp() * 1000)
        self.records.append(Record(topic, partition, offset, timestamp, key, orjson.dumps(message)))

    # Activities -------------------------------------------------------------------------------------------
    def purchase(self, index: int, at: datetime, day: float) -> None:
        rng = self.rng
        customer = self.customer()
        number = f"B{index:08d}"
        items: list[dict[str, Any]] = []
        quantities: dict[str, int] = {}
        total = 0
        for position in range(3):
            category = _weighted(rng, CATEGORIES)
            quantity = rng.randint(1, 3)
            cents = rng.randrange(2_000, 150_000)
            total += cents
            item: dict[str, Any] = {"item_id": f"L{position + 1}", "sku": f"SKU-{rng.randrange(5000):04d}",
                                    "amount": _money(cents), "quantity": quantity, "category": category}
            if category == "fuel":
                item["custom_fields"] = {"litres": max(1, cents // 10_000)}
            items.append(item)
            quantities[item["item_id"]] = quantity
        tender = rng.random()
        if tender < 0.55:
            tenders = [{"mode": rng.choice(("CASH", "UPI")), "amount": _money(total)}]
        elif tender < 0.9:
            tenders = [{"mode": "ABC_CREDIT_CARD", "amount": _money(total)}]
        else:
            card = total // 2
            tenders = [{"mode": "ABC_CREDIT_CARD", "amount": _money(card)},
                       {"mode": "CASH", "amount": _money(total - card)}]
        payload = {"bill_number": number, "amount": _money(total), "line_items": items, "tenders": tenders,
                   "channel": _weighted(rng, CHANNELS), "store": f"S{rng.randrange(200):03d}"}
        self.emit("transaction-add", "TransactionAdd", index, at, customer, payload)
        bill = _Bill(number, customer, day, [i["item_id"] for i in items], quantities)
        self.bills.append(bill)
        known = self.bills_of.get(customer)
        if known is None:
            self.bills_of[customer] = [bill]
            self.buyers.append(customer)
        else:
            known.append(bill)

    def engagement(self, index: int, at: datetime) -> None:
        payload = {"event_name": self.rng.choice(EVENTS), "count": self.rng.randint(1, 3)}
        self.emit("engagement", "Engagement", index, at, self.customer(), payload)

    def redemption(self, index: int, at: datetime, day: float) -> bool:
        rng = self.rng
        if not self.buyers:
            return False
        customer = self.buyers[rng.randrange(len(self.buyers))]
        payload: dict[str, Any] = {"points": str(rng.choice((50, 60, 100, 150, 200, 300)))}
        latest = self.bills_of[customer][-1]
        if rng.random() < 0.2 and day - latest.day < RETURN_WINDOW_DAYS:
            payload["bill_number"] = latest.number
        self.emit("points-redemption", "PointsRedemption", index, at, customer, payload)
        return True

    def return_(self, index: int, at: datetime, day: float) -> bool:
        rng = self.rng
        tail = self.bills[-2000:]
        bill = None
        for _ in range(20):  # a recent bill with something left to return
            if not tail:
                return False
            candidate = tail[rng.randrange(len(tail))]
            if day - candidate.day < RETURN_WINDOW_DAYS and not candidate.whole and (
                len(candidate.returned) < len(candidate.items)
            ):
                bill = candidate
                break
        if bill is None:
            return False
        payload: dict[str, Any] = {"bill_number": bill.number}
        if not bill.returned and rng.random() < 0.4:
            payload["whole_bill"] = True
            bill.whole = True
        else:
            item = rng.choice([i for i in bill.items if i not in bill.returned])
            line: dict[str, Any] = {"item_id": item}
            quantity = bill.quantities[item]
            if quantity > 1 and rng.random() < 0.5:
                line["quantity"] = rng.randint(1, quantity - 1)
                bill.quantities[item] = quantity - line["quantity"]
            else:
                bill.returned.add(item)
            payload["line_items"] = [line]
        self.emit("transaction-return", "TransactionReturn", index, at, bill.customer, payload)
        return True

    def registration(self, index: int, at: datetime) -> bool:
        if not self.unregistered:
            return False
        customer = f"cust-{self.unregistered.pop():07d}"
        rng = self.rng
        payload = {"custom_fields": {"age_group": rng.choice(("18-24", "25-30", "31-45", "46+")),
                                     "household_size": rng.randint(1, 6)}}
        self.emit("registration", "Registration", index, at, customer, payload)
        return True

    def run(self) -> list[Record]:
        rng = self.rng
        step = self.days / self.n
        for index in range(self.n):
            day = index * step
            at = START + timedelta(days=day)
            roll = rng.random()
            kind = MIX[-1][0]
            for name, share in MIX:
                if roll < share:
                    kind = name
                    break
                roll -= share
            done = True
            if kind == "engagement":
                self.engagement(index, at)
            elif kind == "redemption":
                done = self.redemption(index, at, day)
            elif kind == "return":
                done = self.return_(index, at, day)
            elif kind == "registration":
                done = self.registration(index, at)
            else:
                self.purchase(index, at, day)
            if not done:  # nothing to redeem / return yet, or everyone registered: a purchase instead
                self.purchase(index, at, day)
        return self.records


def generate(activities: int = 100_000, customers: int = 50_000, *, seed: int = 7, days: float = 120,
             partitions: int = 12, program_id: str = PROGRAM_ID) -> list[Record]:
    """`activities` encoded activity records over `customers` customers, in event-time (= processing) order."""
    if activities < 1 or customers < 1:
        raise ValueError("need at least one activity and one customer")
    return _Generator(activities, customers, seed, days, partitions, program_id).run()


def messages(records: Iterable[Record], prefix: str = "") -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) for a producer, topics prefixed like the catalogue's real names."""
    for record in records:
        assert record.key is not None and record.value is not None
        yield prefix + record.topic, record.key, record.value


def kinds(records: Iterable[Record]) -> dict[str, int]:
    """How many records of each activity type (for reports)."""
    counts: dict[str, int] = {}
    for record in records:
        kind = str(orjson.loads(record.value or b"{}").get("type"))
        counts[kind] = counts.get(kind, 0) + 1
    return counts
