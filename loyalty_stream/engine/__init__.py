"""The pure engine: deterministic, no I/O. `apply(state, activity, program, source)` is its entry point."""
