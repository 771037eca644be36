"""Event points (Fanfare): a catalogue of engagement events by category with program defaults.

A program stores only the values it overrides; 0 disables an event (it still runs the Engagement rule sets,
it just earns nothing). A name outside the catalogue is a load error in a program and a rejected (dead-
lettered) activity at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from pydantic import Field, PrivateAttr, field_validator

from loyalty_stream.program.common import ProgramPart


def _points(**events: int) -> dict[str, Decimal]:
    return {name: Decimal(points) for name, points in events.items()}


CATALOGUE: Mapping[str, Mapping[str, Decimal]] = MappingProxyType(
    {
        "engagement": _points(page_view=1, product_view=1, product_click=1, search=1),
        "conversion": _points(add_to_cart=5, view_cart=1, begin_checkout=5, purchase=50),
        "social_message": _points(qr_scan=5, message_open=1, message_read=1, message_click=2),
        "queue": _points(queue_entry=5, queue_admission=5, queue_completion=10),
        "draw": _points(draw_entry=5, draw_win=25, draw_completion=5),
        "auction": _points(bid_placed=2, bid_won=25),
        "appointment": _points(appointment_booking=10, appointment_confirmation=5, appointment_check_in=10,
                               appointment_completion=20),
        "waitlist": _points(waitlist_entry=5),
    }
)
"""Category -> event name -> default points for one occurrence."""

DEFAULT_POINTS: Mapping[str, Decimal] = MappingProxyType(
    {name: points for events in CATALOGUE.values() for name, points in events.items()}
)
CATEGORY_OF: Mapping[str, str] = MappingProxyType(
    {name: category for category, events in CATALOGUE.items() for name in events}
)


class EventPoints(ProgramPart):
    overrides: dict[str, Decimal] = Field(
        default_factory=dict, description="Event name -> points for one occurrence (0 disables)."
    )
    expiry: str | None = Field(default=None, description="Expiry condition code for event points.")
    delay_days: int | None = Field(default=None, ge=0, description="Delayed accrual of event points.")

    _table: dict[str, Decimal] = PrivateAttr(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _known_events(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        unknown = sorted(set(value) - set(DEFAULT_POINTS))
        if unknown:
            raise ValueError(f"unknown event names {unknown}; known: {sorted(DEFAULT_POINTS)}")
        bad = sorted(name for name, points in value.items() if not points.is_finite() or points < 0)
        if bad:
            raise ValueError(f"event points must be finite and not negative: {bad}")
        return value

    def model_post_init(self, context: object, /) -> None:
        self._table = {**DEFAULT_POINTS, **self.overrides}  # a dict, not a proxy: programs are deep-copied

    @property
    def table(self) -> Mapping[str, Decimal]:
        """Effective points per event: the catalogue defaults with this program's overrides applied."""
        return self._table

    def points_for(self, event_name: str) -> Decimal | None:
        """Points for one occurrence; None for an event outside the catalogue (0 when disabled)."""
        return self._table.get(event_name)

    def by_category(self) -> dict[str, dict[str, Decimal]]:
        """The effective table grouped like the catalogue (for the admin page)."""
        table = self._table
        return {category: {name: table[name] for name in events} for category, events in CATALOGUE.items()}
