"""The read model: a Redis projection of the output topics, and the reads the HTTP API serves from it.

`state` holds the pure transitions (unit-tested against the engine's ledger), `projection` the Kafka -> Redis
loop and its rebuild, `reader` the queries, `keys` the key layout, `distribution` the balance histogram.
Entry points for the CLI: `projection.run_projection`, `projection.run_rebuild`, `projection.project`.
"""
