"""Event contracts: pydantic models of every message in (activities) and out (ledger, balances, ...)."""
