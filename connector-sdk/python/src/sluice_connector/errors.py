"""The errors connector code raises, and how other exceptions become task failures."""

from __future__ import annotations

import traceback

from ._proto import connector_pb2 as pb


class TaskError(Exception):
    """A task failure. `retriable` failures are worth a restart (a lost connection); fatal ones
    (a bad configuration) need a new configuration. `message` is one lowercase line naming the
    problem; `trace` is free-form detail shown to users as the task's trace."""

    def __init__(self, message: str, retriable: bool = False, trace: str = ""):
        super().__init__(message)
        self.message = message
        self.retriable = retriable
        self.trace = trace

    def to_proto(self) -> pb.TaskError:
        return pb.TaskError(message=self.message, trace=self.trace, retriable=self.retriable)

    def __repr__(self) -> str:
        return f"TaskError({self.message!r}, retriable={self.retriable})"


class DataError(ValueError):
    """A Python value that does not fit the schema it was given, or has no protocol form."""


def as_task_error(exc: BaseException, what: str) -> TaskError:
    """The TaskError reported for `exc`, raised by task code during `what` ("poll", ...).

    A TaskError is reported as raised. Any other exception is a failure with its traceback as
    the trace; it is retriable only for OSError (I/O, connections, timeouts), as the Rust SDK
    treats `std::io::Error`: everything else is taken for a bug or a bad configuration, which
    a restart would not mend.
    """
    if isinstance(exc, TaskError):
        return exc
    detail = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskError(f"{what} failed: {text}", retriable=isinstance(exc, OSError), trace=trace)
