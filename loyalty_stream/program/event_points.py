"""Event points (Fanfare): a catalogue of engagement events by category with program defaults.

A program stores only the values it overrides; 0 disables an event.
"""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import Mapping

from pydantic import Field, field_validator

from loyalty_stream.program.common import ProgramPart

CATALOGUE: Mapping[str, Mapping[str, Decimal]] = MappingProxyType(
    {
        "engagement": {"page_view": Decimal(1), "product_view": Decimal(1), "product_click": Decimal(1),
                       "search": Decimal(1)},
        "conversion": {"add_to_cart": Decimal(5), "view_cart": Decimal(1), "begin_checkout": Decimal(5),
                       "purchase": Decimal(50)},
        "social_message": {"qr_scan": Decimal(5), "message_open": Decimal(1), "message_read": Decimal(1),
                           "message_click": Decimal(2)},
        "queue": {"queue_entry": Decimal(5), "queue_admission": Decimal(5), "queue_completion": Decimal(10)},
        "draw": {"draw_entry": Decimal(5), "draw_win": Decimal(25), "draw_completion": Decimal(5)},
        "auction": {"bid_placed": Decimal(2), "bid_won": Decimal(25)},
        "appointment": {"appointment_booking": Decimal(10), "appointment_confirmation": Decimal(5),
                        "appointment_check_in": Decimal(10), "appointment_completion": Decimal(20)},
        "waitlist": {"waitlist_entry": Decimal(5)},
    }
)

DEFAULT_POINTS: Mapping[str, Decimal] = MappingProxyType(
    {name: points for events in CATALOGUE.values() for name, points in events.items()}
)
CATEGORY_OF: Mapping[str, str] = MappingProxyType(
    {name: category for category, events in CATALOGUE.items() for name in events}
)


class EventPoints(ProgramPart):
    overrides: dict[str, Decimal] = Field(default_factory=dict, description="Event name -> points (0 disables).")
    expiry: str | None = Field(default=None, description="Expiry condition code for event points.")
    delay_days: int | None = Field(default=None, ge=0)

    @field_validator("overrides")
    @classmethod
    def _known_events(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        unknown = sorted(set(value) - set(DEFAULT_POINTS))
        if unknown:
            raise ValueError(f"unknown event names {unknown}; known: {sorted(DEFAULT_POINTS)}")
        negative = sorted(name for name, points in value.items() if points < 0)
        if negative:
            raise ValueError(f"event points cannot be negative: {negative}")
        return value

    def points_for(self, event_name: str) -> Decimal | None:
        """Points for one occurrence; None for an event outside the catalogue."""
        if event_name in self.overrides:
            return self.overrides[event_name]
        return DEFAULT_POINTS.get(event_name)
