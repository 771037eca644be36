"""Tier evaluation: upgrade when lifetime points or purchases cross the next threshold, then run the
`TierChange` rule sets for every change the activity made (automatic or by an `upgrade_tier` action).

A TierChange rule may award points or upgrade again, which can cross another threshold: evaluation repeats
until nothing changes (bounded by the number of tiers, since tiers only go up).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from loyalty_stream.engine import earn, rules
from loyalty_stream.engine.effects import Effects
from loyalty_stream.program.model import Program

_RANKS: Final = "tier_ranks"


def ranks(program: Program) -> Mapping[str, int]:
    """Tier name -> rank (0 = lowest), computed once per program."""
    cached = program.compiled.get(_RANKS)
    if cached is None:
        cached = {tier.name: rank for rank, tier in enumerate(program.tiers)}
        program.compiled[_RANKS] = cached
    result: Mapping[str, int] = cached
    return result


def target_tier(program: Program, tier: str | None, lifetime_points: Decimal, lifetime_purchases: Decimal
                ) -> str | None:
    """The highest tier above `tier` whose threshold the basis meets; None when there is none."""
    policy = program.tier_policy
    basis = lifetime_points if policy.basis == "lifetime_points" else lifetime_purchases
    current = ranks(program).get(tier or "", 0)
    target = None
    for rank, candidate in enumerate(program.tiers):
        if rank > current and basis >= candidate.threshold:
            target = candidate.name
    return target


def _automatic(fx: Effects) -> None:
    program, state = fx.program, fx.state
    if not program.tier_policy.automatic:
        return
    target = target_tier(program, state.tier, state.lifetime_earned, state.lifetime_purchases)
    if target is not None:
        fx.change_tier(target, f"{program.tier_policy.basis} reached threshold")


def evaluate(fx: Effects) -> None:
    """Automatic upgrades only (never downgrades), and the TierChange rule sets of each change."""
    program, state = fx.program, fx.state
    if state.tier is None:
        state.tier = program.lowest_tier
    changes = fx.outcome.tier_changes
    handled = 0
    for _ in range(len(program.tiers) + 1):
        _automatic(fx)
        if handled == len(changes):
            return
        while handled < len(changes):
            change = changes[handled]
            handled += 1
            rules.run_rule_sets(fx, "TierChange", change, earn.EARN_HANDLERS,
                                key_prefix=("TierChange", change.to_tier))
