"""Activities: the customer events that producers publish and the engine evaluates.

Each activity is an envelope plus a typed payload. `type` is the discriminator, so one decoder serves
every activity topic and a message of the wrong type on a topic is still understood (and dead-lettered).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import SchemaValidator

from loyalty_stream.events.envelope import Contract, Envelope, FieldValue, Money, Points


class LineItem(Contract):
    item_id: str = Field(min_length=1, description="Line id, unique within the bill (returns refer to it).")
    sku: str = Field(min_length=1)
    amount: Money = Field(description="Total amount of this line (price x quantity, after discounts).")
    quantity: Decimal = Field(default=Decimal(1), gt=0)
    category: str | None = None
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)


class Tender(Contract):
    mode: str = Field(min_length=1, description="Payment mode, e.g. CASH, ABC_CREDIT_CARD.")
    amount: Money


class TransactionPayload(Contract):
    bill_number: str = Field(min_length=1)
    amount: Money = Field(description="Bill amount that earning rules use.")
    line_items: list[LineItem] = Field(default_factory=list)
    tenders: list[Tender] = Field(default_factory=list)
    channel: str | None = Field(default=None, description="Order channel, e.g. instore, online.")
    store: str | None = None
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)
    extended_fields: dict[str, FieldValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_items(self) -> TransactionPayload:
        ids = [item.item_id for item in self.line_items]
        if len(ids) != len(set(ids)):
            raise ValueError("line_items: item_id values must be unique within a bill")
        return self


class TransactionAdd(Envelope):
    type: Literal["TransactionAdd"] = "TransactionAdd"
    payload: TransactionPayload


class RegistrationPayload(Contract):
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)
    extended_fields: dict[str, FieldValue] = Field(default_factory=dict)
    membership_end: date | None = None
    tier: str | None = Field(default=None, description="Initial tier; the program's lowest when absent.")


class Registration(Envelope):
    type: Literal["Registration"] = "Registration"
    payload: RegistrationPayload = Field(default_factory=RegistrationPayload)


class CustomerUpdatePayload(Contract):
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)
    extended_fields: dict[str, FieldValue] = Field(default_factory=dict)
    membership_end: date | None = None


class CustomerUpdate(Envelope):
    type: Literal["CustomerUpdate"] = "CustomerUpdate"
    payload: CustomerUpdatePayload = Field(default_factory=CustomerUpdatePayload)


class EngagementPayload(Contract):
    event_name: str = Field(min_length=1, description="A name from the event-points catalogue, e.g. page_view.")
    count: int = Field(default=1, ge=1, le=1000)
    attributes: dict[str, FieldValue] = Field(default_factory=dict)


class Engagement(Envelope):
    type: Literal["Engagement"] = "Engagement"
    payload: EngagementPayload


class PointsRedemptionPayload(Contract):
    points: Points
    redemption_id: str | None = Field(default=None, description="Defaults to the event id.")
    bill_number: str | None = Field(default=None, description="Bill the redemption pays for, if any.")


class PointsRedemption(Envelope):
    type: Literal["PointsRedemption"] = "PointsRedemption"
    payload: PointsRedemptionPayload


class RedemptionReversalPayload(Contract):
    redemption_id: str = Field(min_length=1)
    bill_number: str | None = None


class RedemptionReversal(Envelope):
    type: Literal["RedemptionReversal"] = "RedemptionReversal"
    payload: RedemptionReversalPayload


class ReturnedItem(Contract):
    item_id: str = Field(min_length=1)
    quantity: Decimal | None = Field(default=None, gt=0, description="Returned quantity; all when absent.")
    amount: Money | None = Field(default=None, description="Returned amount; pro rata by quantity when absent.")


class TransactionReturnPayload(Contract):
    bill_number: str = Field(min_length=1)
    whole_bill: bool = False
    line_items: list[ReturnedItem] = Field(default_factory=list)
    amount: Money | None = Field(default=None, description="Returned amount of a bill without line items.")

    @model_validator(mode="after")
    def _something_returned(self) -> TransactionReturnPayload:
        if not self.whole_bill and not self.line_items and self.amount is None:
            raise ValueError("a return names line_items, an amount, or whole_bill=true")
        return self


class TransactionReturn(Envelope):
    type: Literal["TransactionReturn"] = "TransactionReturn"
    payload: TransactionReturnPayload


class PointsUnlockPayload(Contract):
    bill_number: str = Field(min_length=1)
    item_ids: list[str] = Field(default_factory=list, description="Unlock only these lines; all when empty.")


class PointsUnlock(Envelope):
    type: Literal["PointsUnlock"] = "PointsUnlock"
    payload: PointsUnlockPayload


class ManualAdjustmentPayload(Contract):
    direction: Literal["add", "deduct"]
    points: Points
    reason: str = Field(min_length=1)
    operator_id: str = Field(min_length=1)
    clamp: bool = Field(default=False, description="Deduct what is available instead of rejecting.")


class ManualAdjustment(Envelope):
    type: Literal["ManualAdjustment"] = "ManualAdjustment"
    payload: ManualAdjustmentPayload


class DelayedAccrualPayload(Contract):
    due_at: AwareDatetime = Field(description="When the promised points become current.")


class DelayedAccrual(Envelope):
    """Emitted by the scheduler when promised points fall due; `event_time` equals `due_at`."""

    type: Literal["DelayedAccrual"] = "DelayedAccrual"
    payload: DelayedAccrualPayload


class PointsExpiryPayload(Contract):
    due_at: AwareDatetime = Field(description="When lots expire (or a reminder falls due).")


class PointsExpiry(Envelope):
    """Emitted by the scheduler when lots expire or reminders fall due for an idle customer."""

    type: Literal["PointsExpiry"] = "PointsExpiry"
    payload: PointsExpiryPayload


Activity = Annotated[
    TransactionAdd
    | Registration
    | CustomerUpdate
    | Engagement
    | PointsRedemption
    | RedemptionReversal
    | TransactionReturn
    | PointsUnlock
    | ManualAdjustment
    | DelayedAccrual
    | PointsExpiry,
    Field(discriminator="type"),
]

ACTIVITY_TYPES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        TransactionAdd,
        Registration,
        CustomerUpdate,
        Engagement,
        PointsRedemption,
        RedemptionReversal,
        TransactionReturn,
        PointsUnlock,
        ManualAdjustment,
        DelayedAccrual,
        PointsExpiry,
    )
}

activity_adapter: TypeAdapter[Activity] = TypeAdapter(Activity)


_PLAIN_DECIMAL_KEYS = frozenset({"type", "ge", "gt", "allow_inf_nan", "max_digits", "metadata"})


def _plain_text_decimals(node: Any, models: list[type]) -> Any:
    """A copy of a core schema in which every `max_digits` decimal (Money, Points) takes only a string of at most
    `max_digits` ASCII digits and dots, without the `max_digits`, finiteness and `ge=0` checks: such a text
    cannot have more digits, be negative or not finite, and `Decimal` parses it as the full check does.
    pydantic-core checks `max_digits` by calling `normalize` and `as_tuple` in Python (about 4.5k instructions
    a value). Collects the model classes on the way."""
    if isinstance(node, list):
        return [_plain_text_decimals(item, models) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "model":
        models.append(node["cls"])
    if node.get("type") == "decimal" and "max_digits" in node and node.get("allow_inf_nan") is False \
            and node.keys() <= _PLAIN_DECIMAL_KEYS:
        text = {"type": "str", "strict": True, "strip_whitespace": False,
                "pattern": f"^[0-9.]{{1,{node['max_digits']}}}$"}
        value: dict[str, Any] = {"type": "decimal"}
        if "gt" in node:
            value["gt"] = node["gt"]  # "0" is such a text
        if node.get("ge", 0) != 0:
            value["ge"] = node["ge"]
        return {"type": "chain", "steps": [text, value]}
    return {key: _plain_text_decimals(value, models) for key, value in node.items()}


def _plain_text_validator(adapter: TypeAdapter[Any]) -> SchemaValidator:
    """`adapter`'s validator with plain-text decimals (see `_plain_text_decimals`). pydantic-core would build a
    complete model's schema from the model's own validator, so the models are marked incomplete meanwhile."""
    models: list[type] = []
    schema = _plain_text_decimals(adapter.core_schema, models)
    complete = [cls for cls in dict.fromkeys(models) if cls.__dict__.get("__pydantic_complete__")]
    for cls in complete:
        cls.__pydantic_complete__ = False  # type: ignore[attr-defined]
    try:
        return SchemaValidator(schema)
    finally:
        for cls in complete:
            cls.__pydantic_complete__ = True  # type: ignore[attr-defined]


_plain_text_activity = _plain_text_validator(activity_adapter)


def validate_activity_json(raw: bytes) -> Envelope:
    """`activity_adapter.validate_json(raw)`, faster: an activity whose money and points are plain texts of
    digits and dots (what producers send) takes the plain-text validator, which accepts a subset of what the
    models accept, with equal values; anything else (and every error) goes through the models' own validator."""
    try:
        activity: Envelope = _plain_text_activity.validate_json(raw)
    except ValidationError:
        activity = activity_adapter.validate_json(raw)
    return activity
