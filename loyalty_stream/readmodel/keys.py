"""The Redis key layout of the read model, in one place, so the projection (writer) and the API (reader) agree.

Every key starts with ``{redis_prefix}{topic_prefix}rm:``: the deployment's Redis prefix, then its topic prefix
(two deployments on one Redis, or two tests, never share a key), then ``rm:`` to keep clear of the scheduler's
``due`` keys under the same prefix. Program and customer ids are percent-encoded inside keys, so an id that
contains ``:`` can never make two customers' keys collide.

=====================================  ======  ====================================================================
key (after the base)                   type    content
=====================================  ======  ====================================================================
``offsets``                            hash    ``topic:partition`` -> next offset to read (written with the data)
``programs``                           set     program ids seen
``dist:{program}``                     zset    customer id -> current balance (the distribution histogram)
``c:{program}:{customer}:bal``         hash    balances, tier, ledger seq, debt (see ``state.CustomerView``)
``c:{program}:{customer}:lots``        hash    lot id -> JSON {r: remaining, p: promised, x: expires_at, ...}
``c:{program}:{customer}:exp``         hash    last usable local date (ISO) -> points expiring then
``c:{program}:{customer}:prm``         hash    ``available_at|bill_number`` -> promised points
``c:{program}:{customer}:hist``        zset    ledger entry id, scored by seq (the last N entries)
``c:{program}:{customer}:hist:e``      hash    ledger entry id -> JSON of the entry plus ``text`` (``describe``)
``c:{program}:{customer}:ntf``         zset    notification id, scored by event time (ms)
``c:{program}:{customer}:ntf:e``       hash    notification id -> JSON
``c:{program}:{customer}:tier``        zset    tier change id, scored by event time (ms)
``c:{program}:{customer}:tier:e``      hash    tier change id -> JSON
``idem:{key}``                         string  API idempotency key -> fingerprint of the request (24 h)
=====================================  ======  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


def _q(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    bal: str
    lots: str
    exp: str
    prm: str
    hist: str
    hist_entries: str
    ntf: str
    ntf_entries: str
    tier: str
    tier_entries: str

    def all(self) -> tuple[str, ...]:
        return (self.bal, self.lots, self.exp, self.prm, self.hist, self.hist_entries, self.ntf,
                self.ntf_entries, self.tier, self.tier_entries)


@dataclass(frozen=True, slots=True)
class Keys:
    base: str
    """``{redis_prefix}{topic_prefix}rm:``; every read-model key starts with it."""

    @classmethod
    def for_prefixes(cls, redis_prefix: str, topic_prefix: str) -> Keys:
        return cls(f"{redis_prefix}{topic_prefix}rm:")

    @property
    def offsets(self) -> str:
        return f"{self.base}offsets"

    @property
    def programs(self) -> str:
        return f"{self.base}programs"

    @property
    def pattern(self) -> str:
        """SCAN pattern of every key of the read model (``*`` etc. in the base are escaped)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.base)
        return f"{escaped}*"

    def distribution(self, program_id: str) -> str:
        return f"{self.base}dist:{_q(program_id)}"

    def idempotency(self, key: str) -> str:
        return f"{self.base}idem:{_q(key)}"

    def customer(self, program_id: str, customer_id: str) -> CustomerKeys:
        root = f"{self.base}c:{_q(program_id)}:{_q(customer_id)}:"
        return CustomerKeys(
            bal=f"{root}bal", lots=f"{root}lots", exp=f"{root}exp", prm=f"{root}prm", hist=f"{root}hist",
            hist_entries=f"{root}hist:e", ntf=f"{root}ntf", ntf_entries=f"{root}ntf:e", tier=f"{root}tier",
            tier_entries=f"{root}tier:e",
        )
