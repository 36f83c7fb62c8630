"""What Prefect logs about a failure we raised on purpose: one line, said once.

Two filters, one per audience:

* :func:`quiet_console` — the command line with run tracking (``--track``) prints the error
  itself (:mod:`flows.cli_errors`), so the console does not repeat Prefect's records of it (the
  flow and task engines' ERROR records, their ``Finished in state Failed/Completed`` lines, the
  event and log shippers' ``Still processing items`` notes at exit). It keeps the run's link
  (``View at ...``), cache hits (``Cached``) and the stages' own messages. The Prefect API still
  receives every record.
* :func:`one_line_deliberate_errors` — in a flow run (a served deployment included) a deliberate
  error (:func:`flows.errors.is_deliberate`: a bad path, a refused parameter, a missing weight file)
  is logged without its traceback, which says nothing the one line does not; a bug keeps it, and so
  does every error when Prefect logs at DEBUG (``PREFECT_LOGGING_LEVEL=DEBUG``).

Both are idempotent (a filter is added once per logger or handler).
"""

from __future__ import annotations

import logging

from flows.errors import is_deliberate

__all__ = ["quiet_console", "one_line_deliberate_errors"]

_ENGINES = ("prefect.flow_runs", "prefect.task_runs")
#: Engine lines the console does without: a failure the command line reports itself, and routine completions
#: (a cache hit, ``Finished in state Cached(...)``, stays: it says that nothing was recomputed).
_REPEATED = ("Finished in state Failed", "Finished in state Crashed", "Finished in state Completed")


class _NotOnConsole(logging.Filter):
    """Drops the records that repeat a failure the command line reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith(_ENGINES):
            return record.levelno < logging.ERROR and not message.startswith(_REPEATED)
        return not message.startswith("Still processing items")


class _NoDeliberateTraceback(logging.Filter):
    """Drops the traceback of a deliberate error from a record (unless its logger logs at DEBUG), and the
    engine's closing "exited with unexpected exception" record of one (the run's state already says it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_deliberate(exc) or logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        if str(record.msg).startswith("Engine execution exited"):
            return False
        record.exc_info, record.exc_text = None, None
        return True


def _add_once(target: logging.Logger | logging.Handler, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind())


def quiet_console() -> None:
    """Filter the console handlers (the root logger's, the ``prefect`` loggers') as the module docstring says."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler

    ensure_logging_setup()  # Prefect adds its handlers once per process; filter them, not an empty list
    for name in ("", "prefect", *_ENGINES):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, APILogHandler):
                _add_once(handler, _NotOnConsole)


def one_line_deliberate_errors() -> None:
    """Strip deliberate errors' tracebacks from the flow and task engines' records in this process."""
    for name in _ENGINES:
        _add_once(logging.getLogger(name), _NoDeliberateTraceback)
