"""The pure engine: deterministic, no I/O. `apply(state, activity, program, source)` is its entry point.

Its modules usually run compiled by mypyc, with identical results; `loyalty_stream.engine_form` chooses.
"""
