"""Load-time checks a program must pass beyond its schema (the document's limitations)."""

from __future__ import annotations

from loyalty_stream.program.model import Program


def check_program(program: Program) -> list[str]:
    """Every problem found, each naming the rule or condition at fault; empty when the program is sound."""
    problems: list[str] = []
    if not program.redeem_conditions:
        problems.append("redeem_conditions: at least one redemption strategy is required")
    return problems
