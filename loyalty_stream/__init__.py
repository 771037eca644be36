"""loyalty-stream: an event-driven loyalty-points engine on Kafka."""

from loyalty_stream.engine_form import ENGINE_FORM

__all__ = ["ENGINE_FORM"]
