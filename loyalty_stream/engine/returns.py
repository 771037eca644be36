"""Returns: claw back the points the returned items earned, from the lots they created."""

from __future__ import annotations

from loyalty_stream.engine.effects import Effects
from loyalty_stream.events import activities as act


def handle_return(fx: Effects, activity: act.TransactionReturn) -> None:
    fx.outcome.rejected = "returns are not supported yet"
