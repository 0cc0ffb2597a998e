"""Request and response logging: a sampled share of scored requests as JSON lines, to stdout or an HTTP sink.

Drift analysis and retraining need the inputs a model really receives. The model server hands each
scoring request to :meth:`RequestLog.serve` (or, for a handler that has the bodies in hand, calls
:meth:`RequestLog.sample` and then :meth:`RequestLog.offer`), and this package does the rest:

- **Sampling** is one random draw per request, before any body is looked at. Only a sampled request's
  body chunks are kept, by reference, as they pass through (``capture.py``); nothing is copied, joined or
  parsed on the scoring path.
- **Bounded**: a sampled exchange is put on a fixed-size queue with ``put_nowait`` (``log.py``). When the
  queue is full (the sink is slow or down) the record is dropped and counted
  (``modelpilot_request_log_dropped_total``), never waited for, so logging can neither slow nor fail a
  scoring request. Bodies larger than a limit are left out of their record, so the queue's memory is
  bounded too.
- **A writer thread** takes records off the queue in batches, parses the bodies and redacts the configured
  fields (``records.py``, with the pure functions of ``redaction.py`` over every MLflow input format and
  the Open Inference Protocol's tensors), serialises them as JSON lines and writes each batch to stdout or
  POSTs it to an HTTP(S) sink with a timeout (``sinks.py``). A batch the sink fails is dropped and counted.
- **Credentials** for the sink come from the environment (``MODELPILOT_REQUEST_LOG_TOKEN``, sent as a
  bearer token) and are never printed; a sink URL carrying ``user:password@`` is refused without echoing
  it, and log lines show the sink without its query string.

The --log-requests-* flags are in ``config.py``. docs/serving.md ("Request logging") describes the record
format.
"""

from .config import RequestLogConfig, add_arguments, check_arguments, config_from_args
from .log import RequestLog, from_args
from .redaction import PROTOCOL_MLFLOW, PROTOCOL_V2, REDACTED
from .sinks import TOKEN_ENV

__all__ = [
    "PROTOCOL_MLFLOW", "PROTOCOL_V2", "REDACTED", "TOKEN_ENV", "RequestLog", "RequestLogConfig", "add_arguments",
    "check_arguments", "config_from_args", "from_args",
]  # fmt: skip
