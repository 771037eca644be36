"""One activity record in -> new customer state bytes and output records out; no Faust, no I/O.

The Faust agent, the offline replay and the benchmark all call this, so every path decodes, dead-letters and
encodes identically. Customer state is stored as orjson bytes keyed by `program_id|customer_id`; the engine
works on a decoded copy, so an engine error can never leave a half-applied state behind in the store.

Optionally (`state_cache=N`) the processor keeps the decoded states of the N customers it saw last, each with
the bytes it encoded it to: when the store still holds exactly those bytes, the next activity of that customer
starts from the cached object instead of decoding them again (a frequent customer's state can hold hundreds of
lots). The engine gives the same results on a state however it was obtained (the codec round trip is exact;
the lifecycle property tests run both ways). If the engine fails on a cached state, the object is restored in
place from the stored bytes, so anything still holding it from an earlier record sees that record's state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome, encode_ledger, encode_outputs
from loyalty_stream.engine.parking import GivenUp
from loyalty_stream.engine.state import CustomerState, state_from_dict, state_to_json
from loyalty_stream.events.codec import DecodeError, decode_activity, encode, right_sized, text_or_base64
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import DeadLetter, SourceRef
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.program.model import Program

# Logical output topic names (the catalogue maps them to real, prefixed names).
LEDGER = "ledger"
BALANCE_CHANGES = "balance-changes"
NOTIFICATIONS = "notifications"
REDEMPTION_RESULTS = "redemption-results"
TIER_CHANGES = "tier-changes"
COUPONS = "coupons"
DEAD_LETTER = "dead-letter"

#: Which activity types each input topic accepts (anything else on that topic is dead-lettered).
TOPIC_ACTIVITIES: dict[str, frozenset[str]] = {
    "transaction-add": frozenset({"TransactionAdd"}),
    "registration": frozenset({"Registration"}),
    "customer-update": frozenset({"CustomerUpdate"}),
    "engagement": frozenset({"Engagement"}),
    "points-redemption": frozenset({"PointsRedemption"}),
    "redemption-reversal": frozenset({"RedemptionReversal"}),
    "transaction-return": frozenset({"TransactionReturn"}),
    "points-unlock": frozenset({"PointsUnlock"}),
    "manual-adjustment": frozenset({"ManualAdjustment"}),
    "delayed-accrual": frozenset({"DelayedAccrual", "PointsExpiry"}),
}
TOPIC_OF_ACTIVITY: dict[str, str] = {kind: topic for topic, kinds in TOPIC_ACTIVITIES.items() for kind in kinds}
_OUTCOME_TOPICS = (LEDGER, BALANCE_CHANGES, NOTIFICATIONS, REDEMPTION_RESULTS, TIER_CHANGES, COUPONS)
"""The topics of an outcome's outputs, in the order `engine.effects.encode_outputs` takes them."""


def state_key(program_id: str, customer_id: str) -> bytes:
    return f"{program_id}|{customer_id}".encode()


def encode_state(state: CustomerState, *, settle: bool = False) -> bytes:
    """The state's bytes as the store keeps them (right-sized: the store holds every customer's); `settle`:
    the state object is kept (cached) for the customer's next record (see `state_to_json`, whose settled
    bytes are already right-sized: joined, not orjson's own)."""
    if settle:
        return state_to_json(state, settle=True)
    return right_sized(state_to_json(state))


def decode_state(raw: bytes) -> CustomerState:
    return state_from_dict(orjson.loads(raw))


@dataclass(slots=True)
class Processed:
    """What the shell must do after one record: store `state` under `state_key` (if set), send `outputs`."""

    customer_id: str | None = None
    state_key: bytes | None = None
    state: bytes | None = None
    outputs: list[tuple[str, bytes]] = field(default_factory=list)
    activity: Envelope | None = None
    outcome: Outcome | None = None
    dead_letter: DeadLetter | None = None
    """This record's dead letter, if it has one."""
    given_up: list[DeadLetter] = field(default_factory=list)
    """Dead letters of earlier records, parked by the engine and given up now (also in `outputs`)."""


Prepared = tuple[Envelope, Program, bytes, str]
"""A record `ActivityProcessor.prepare` decoded: (activity, program, state key, real topic)."""


def _wall_clock() -> datetime:
    return datetime.now(UTC)


_STATE_FIELDS = tuple(f.name for f in fields(CustomerState))


def _restore(target: CustomerState, source: CustomerState) -> None:
    """Make `target` the state `source` is, in place (every field)."""
    for name in _STATE_FIELDS:
        setattr(target, name, getattr(source, name))


class ActivityProcessor:
    """Decode -> engine -> encode for one record; bad input becomes a dead letter and never raises."""

    def __init__(self, registry: ProgramRegistry, clock: Callable[[], datetime] = _wall_clock, *,
                 state_cache: int = 0, object_store: bool = False, ledger_only: bool = False) -> None:
        self.registry = registry
        self.clock = clock
        self.object_store = object_store
        """`load_state` gives state objects (see `process`), not bytes."""
        self.ledger_only = ledger_only
        """Encode the ledger entries and dead letters only, not the balance changes, notifications and the rest
        (the offline replay keeps the ledger: the others were 1.7 outputs a record, 3 % of a replay)."""
        self.state_cache = state_cache
        """How many decoded customer states to keep (0: decode every record's state afresh)."""
        self._states: OrderedDict[bytes, tuple[bytes, CustomerState]] = OrderedDict()

    def process(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        load_state: Callable[[bytes], bytes | CustomerState | None],
        *,
        source_topic: str | None = None,
    ) -> Processed:
        """`topic` is the logical input topic; `source_topic` the real (prefixed) name written on outputs.

        `load_state` gives the stored bytes, or, with `object_store` (the offline replay), the state object
        itself: that one is changed in place and never encoded (`Processed.state` stays None; the new state is
        `outcome.state`). After an engine error such a state may be half-applied: the dead letter then names
        its `state_key`, and the store must rebuild it (the replay re-applies the customer's earlier records)."""
        prepared = self.prepare(topic, partition, offset, key, value, source_topic=source_topic)
        if isinstance(prepared, Processed):
            return prepared
        return self.finish(prepared, partition, offset, key, value, load_state(prepared[2]))

    def prepare(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, *,
                source_topic: str | None = None) -> Prepared | Processed:
        """`process` up to the state it needs: the decoded record (`Prepared`: its `state_key` is third), or
        the record's dead letter. With `finish`, for callers that fetch the states of many records at once
        (the engine process, `stream.engine_process`)."""
        real_topic = source_topic or topic
        try:
            activity = decode_activity(value)
        except DecodeError as exc:
            return self._dead(real_topic, partition, offset, key, value, exc.error_class, exc.reason)
        accepted = TOPIC_ACTIVITIES.get(topic)
        kind = type(activity).__name__
        if accepted is not None and kind not in accepted:
            return self._dead(real_topic, partition, offset, key, value, "wrong_topic",
                              f"{kind} does not belong on {topic}; publish it to {TOPIC_OF_ACTIVITY[kind]}")
        if key is not None and key.decode("utf-8", "replace") != activity.customer_id:
            return self._dead(real_topic, partition, offset, key, value, "schema_violation",
                              f"the message key must be the customer id {activity.customer_id!r}")
        program = self.registry.get(activity.program_id)
        if program is None:
            return self._dead(real_topic, partition, offset, key, value, "unknown_program",
                              f"unknown program {activity.program_id!r}; known: {self.registry.ids()}")
        return (activity, program, state_key(activity.program_id, activity.customer_id), real_topic)

    def finish(self, prepared: Prepared, partition: int, offset: int, key: bytes | None, value: bytes | None,
               stored: bytes | CustomerState | None) -> Processed:
        """`process` from `prepare`'s result and the state stored under its key."""
        activity, program, skey, real_topic = prepared
        source = trusted(SourceRef, {"topic": real_topic, "partition": partition, "offset": offset})
        if self.object_store:
            assert stored is None or isinstance(stored, CustomerState)
            return self._process_object(stored, activity, program, source, skey, (real_topic, partition, offset,
                                                                                     key, value))
        assert not isinstance(stored, CustomerState), "a byte store gives bytes"
        cache = self._states if self.state_cache > 0 else None
        cached = None
        if cache is not None and stored is not None:
            hit = cache.get(skey)
            if hit is not None and (hit[0] is stored or hit[0] == stored):
                cached = hit[1]
        try:
            state = cached if cached is not None else decode_state(stored) if stored is not None else None
            offsets_before = dict(state.offsets) if state is not None else None
            outcome = apply(state, activity, program, source, in_place=True)
        except Exception as exc:  # the engine must never stop the worker; the record is kept for analysis
            if cached is not None and stored is not None:
                _restore(cached, decode_state(stored))
            return self._dead(real_topic, partition, offset, key, value, "engine_error",
                              f"{type(exc).__name__}: {exc}")
        processed = Processed(customer_id=activity.customer_id, state_key=skey, activity=activity, outcome=outcome)
        if outcome.duplicate and outcome.state.offsets == offsets_before:
            if cache is not None and cached is not None:
                cache.move_to_end(skey)
            return processed
        processed.state = encode_state(outcome.state, settle=cache is not None)
        if cache is not None:
            cache[skey] = (processed.state, outcome.state)
            cache.move_to_end(skey)
            if len(cache) > self.state_cache:
                cache.popitem(last=False)  # the least recently used
        self._outputs(processed, real_topic, partition, offset, key, value)
        return processed

    def _process_object(self, state: CustomerState | None, activity: Envelope, program: Program,
                        source: SourceRef, skey: bytes, record: tuple[str, int, int, bytes | None, bytes | None]
                        ) -> Processed:
        """`process` on a state object from an object store: applied in place, not encoded."""
        try:
            offsets_before = dict(state.offsets) if state is not None else None
            outcome = apply(state, activity, program, source, in_place=True)
        except Exception as exc:
            dead = self._dead(*record, "engine_error", f"{type(exc).__name__}: {exc}")
            dead.state_key = skey  # the object may be half-applied: the store rebuilds it
            return dead
        processed = Processed(customer_id=activity.customer_id, state_key=skey, activity=activity, outcome=outcome)
        if not (outcome.duplicate and outcome.state.offsets == offsets_before):
            self._outputs(processed, *record)
        return processed

    def _outputs(self, processed: Processed, real_topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None) -> None:
        """Encode what the engine produced for one record, and its dead letters, into `processed.outputs`."""
        outcome, activity = processed.outcome, processed.activity
        assert outcome is not None and activity is not None
        outputs = processed.outputs
        # Each output as `encode` writes it, by compiled code (an interpreted loop here cost ~2k instructions each).
        if self.ledger_only:
            encode_ledger(outcome, LEDGER, outputs)
        else:
            encode_outputs(outcome, _OUTCOME_TOPICS, outputs)
        if outcome.rejected is not None:
            dead = self._dead(real_topic, partition, offset, key, value, "rejected_by_program", outcome.rejected)
            outputs.extend(dead.outputs)
            processed.dead_letter = dead.dead_letter
        for given in outcome.given_up:
            if given.activity.event_id == activity.event_id:  # this record: given up as soon as it came
                dead = self._dead(real_topic, partition, offset, key, value, given.error_class, given.reason)
                processed.dead_letter = dead.dead_letter
            else:
                dead = self._dead_parked(given)
                if dead.dead_letter is not None:
                    processed.given_up.append(dead.dead_letter)
            outputs.extend(dead.outputs)

    def _dead_parked(self, given: GivenUp) -> Processed:
        """The dead letter of a record the engine parked earlier: its source, and the activity it carried (as
        canonical JSON; the original bytes are not kept)."""
        activity, source = given.activity, given.source
        if source is None:  # parked by a caller that gave no source: name the topic it belongs on
            where = (TOPIC_OF_ACTIVITY[type(activity).__name__], -1, -1)
        else:
            where = (source.topic, source.partition, source.offset)
        return self._dead(*where, activity.customer_id.encode(), encode(activity), given.error_class, given.reason)

    def _dead(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
              error_class: str, reason: str) -> Processed:
        text, encoding = text_or_base64(value)
        letter = DeadLetter.model_construct(
            type="DeadLetter",
            dead_letter_id=f"{topic}:{partition}:{offset}",
            reason=reason,
            error_class=cast(Any, error_class),
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else key.decode("utf-8", "replace"),
            value=text,
            value_encoding=cast(Any, encoding),
            failed_at=self.clock(),
        )
        return Processed(outputs=[(DEAD_LETTER, encode(letter))], dead_letter=letter,
                         customer_id=None if key is None else key.decode("utf-8", "replace"))
