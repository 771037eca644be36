"""Expiry dates of new lots and rolling expiry (the document's expiry conditions)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from loyalty_stream.engine.effects import Effects


def assign_expiry(fx: Effects, code: str | None, transaction_fields: dict[str, Any] | None = None
                  ) -> tuple[datetime | None, str | None, bool]:
    """(expires_at, expiry code, rolling) for points credited now under expiry condition `code`
    (the program's default when None). Never-expiring points give (None, code, False)."""
    code = code or fx.program.default_expiry
    return None, code, False


def roll_expiry(fx: Effects, awarded: Decimal) -> None:
    """After a rolling event (points awarded, or zero with the program toggle), extend rolling lots."""
