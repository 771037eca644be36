"""Tier evaluation: upgrade when lifetime points or purchases cross the next threshold."""

from __future__ import annotations

from loyalty_stream.engine.effects import Effects


def evaluate(fx: Effects) -> None:
    """Automatic upgrades only (never downgrades): the highest tier whose threshold is met."""
    program, state = fx.program, fx.state
    if state.tier is None:
        state.tier = program.lowest_tier
    if not program.tier_policy.automatic:
        return
    basis = state.lifetime_earned if program.tier_policy.basis == "lifetime_points" else state.lifetime_purchases
    names = [t.name for t in program.tiers]
    current_rank = names.index(state.tier) if state.tier in names else 0
    target = None
    for rank, tier in enumerate(program.tiers):
        if rank > current_rank and basis >= tier.threshold:
            target = tier.name
    if target is not None:
        fx.change_tier(target, f"{program.tier_policy.basis} reached threshold")
