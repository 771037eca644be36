"""The program model (earn, expiry, redeem, return, rounding, event points, tiers) and its loader."""
