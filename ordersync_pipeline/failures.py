"""Can this failure heal by waiting? One answer, and one line, for any exception a sync can meet.

The runner and the Dagster layer retry a partition only when ``is_transient(exc)``, and show
``describe(exc)``: the underlying cause rather than a wrapper's text (Dagster's step error, a retry
request), on one line, without a secret.

Rules, applied to the first exception in the cause chain (``__cause__``, else an unsuppressed
``__context__``) that one of them knows:

=============================  ==========================================================
``TopError``                   its ``.retryable``: transport faults, 5xx, bans, bad bodies heal;
                               credentials, arguments, business refusals, a bad gateway URL not
``ConfigError``                permanent: a bad file, an unset secret environment variable, an
                               unknown shop
pydantic ``ValidationError``   permanent (configuration built in code)
``WarehouseError``             ``.transient`` (unreachable heals; misconfigured does not)
SQLAlchemy ``DBAPIError``      lost connection, deadlock, busy heal; bad data, rights do not
lake ``LakeError``             permanent: a from-lake rebuild cannot fetch what is not there, and
                               in a fetch-then-load run the fetch's own failure is what is retried
``PermissionError`` & co.      permanent: a directory the process cannot write
anything else                  transient: a transient-looking bug costs a few bounded retries,
                               while calling a known-permanent error transient costs minutes
=============================  ==========================================================
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from ordersync_pipeline.sync.lake import LakeError
from ordersync_pipeline.sync.windows import BeyondHorizon
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.warehouse.connect import WarehouseError, describe_db_error, is_transient_db_error

__all__ = ["is_transient", "describe", "cause_of", "one_line", "known_errors"]

_MAX_CHARS = 500
# How deep to follow a cause chain (a cycle is possible in principle).
_MAX_DEPTH = 20


def _never(_exc: BaseException) -> bool:
    return False


def _top_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TopError) and exc.retryable


def _warehouse_transient(exc: BaseException) -> bool:
    return isinstance(exc, WarehouseError) and exc.transient


def _db_transient(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.DBAPIError) and is_transient_db_error(exc)


Rule = tuple[type[BaseException], Callable[[BaseException], bool]]


@functools.cache
def _rules() -> list[Rule]:
    """(type, transient?) in priority order; the first exception in the chain matching a type decides.

    Built on first use, not at import: the sync runner imports this module, and its loader processes
    (which never classify a failure) would otherwise import pydantic and the configuration models,
    ~20 MB of memory each."""
    from pydantic import ValidationError

    from ordersync_pipeline.config import ConfigError

    return [
        (TopError, _top_retryable),
        (ConfigError, _never),
        (ValidationError, _never),
        (WarehouseError, _warehouse_transient),
        (sa.exc.DBAPIError, _db_transient),
        (LakeError, _never),
        (BeyondHorizon, _never),
        (PermissionError, _never),
        (NotADirectoryError, _never),
        (IsADirectoryError, _never),
    ]


@functools.cache
def known_errors() -> tuple[type[BaseException], ...]:
    """The exception types the rules know (was the constant ``KNOWN_ERRORS``; see ``_rules``)."""
    return tuple(cls for cls, _ in _rules())


def is_transient(exc: BaseException) -> bool:
    """True when waiting and retrying may help; False when only a fix (configuration, credentials,
    data) can. Unknown exceptions count as transient."""
    cause = cause_of(exc)
    for cls, transient in _rules():
        if isinstance(cause, cls):
            return transient(cause)
    # An interrupt or exit is not a failure to retry.
    return isinstance(cause, Exception)


def describe(exc: BaseException) -> str:
    """One secret-free line naming the underlying cause."""
    from pydantic import ValidationError

    from ordersync_pipeline.config import format_validation_error

    cause = cause_of(exc)
    if isinstance(cause, ValidationError):
        text = f"{cause.title}: {format_validation_error(cause)}"
    elif isinstance(cause, sa.exc.DBAPIError):
        # SQLAlchemy's own text adds the statement and its parameters (buyer data).
        text = f"database error: {describe_db_error(cause)}"
    elif isinstance(cause, known_errors()):
        text = str(cause) or type(cause).__name__
    else:
        text = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return _one_line(text)


def cause_of(exc: BaseException) -> BaseException:
    """The first exception of ``exc``'s cause chain that a rule knows, else the innermost one."""
    chain = list(_chain(exc))
    known = known_errors()
    return next((e for e in chain if isinstance(e, known)), chain[-1])


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_DEPTH:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def one_line(text: str) -> str:
    """``text`` as ``describe`` shows a cause: one line, a URL's password masked, at most 500 characters
    (the alert path applies the same rule to alert messages)."""
    return _one_line(text)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    # A database URL in an unknown error's text must not show its password.
    line = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", line)
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 3] + "..."
