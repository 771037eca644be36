"""Manual adjustments by an operator: add or deduct points with a reason."""

from __future__ import annotations

from loyalty_stream.engine.effects import Effects
from loyalty_stream.events import activities as act


def handle_adjustment(fx: Effects, activity: act.ManualAdjustment) -> None:
    fx.outcome.rejected = "manual adjustments are not supported yet"
