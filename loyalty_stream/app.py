"""`faust -A loyalty_stream.app worker`: the worker as a plain Faust app, configured from the environment.

Same app as `loyalty-stream worker` (settings from `LOYALTY_*`, programs from `LOYALTY_PROGRAM_FILES`,
the scheduler on when Redis answers). Built at import because that is what `faust -A` expects.
"""

from __future__ import annotations

from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.settings import get_settings
from loyalty_stream.stream.runtime import connect_redis
from loyalty_stream.stream.worker import LoyaltyWorker

settings = get_settings()
worker = LoyaltyWorker(settings, ProgramRegistry.from_files(settings.program_paths()),
                       redis=connect_redis(settings))
app = worker.app
