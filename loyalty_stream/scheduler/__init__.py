"""Due-time index and the leader task that emits due events, so idle customers' points convert and expire.

Worker side: after applying an activity, `await record_state_due(redis, prefix, state, program)`.
Leader side: `Scheduler(redis, prefix, send).run(clock, interval)` on every replica; one leads.
"""

from loyalty_stream.scheduler.due_index import (
    ProgramLookup,
    read_due,
    rebuild_due_index,
    record_due,
    record_state_due,
)
from loyalty_stream.scheduler.runner import SCHEDULER_TOPIC, Scheduler, Send, due_event, scheduled_event_id

__all__ = [
    "SCHEDULER_TOPIC",
    "ProgramLookup",
    "Scheduler",
    "Send",
    "due_event",
    "read_due",
    "rebuild_due_index",
    "record_due",
    "record_state_due",
    "scheduled_event_id",
]
