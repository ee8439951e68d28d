"""Bad-input errors, and a clean one-line report of them from ``python -m monai.bundle run``.

Not tied to a paper. :class:`InputError` is what every input check of the project raises (a ``ValueError`` whose
one-line message names the file and the problem). Inside a bundle run such an error arrives wrapped: MONAI's
``apply_transform`` re-raises it as ``RuntimeError: applying transform ...``, a ``DataLoader`` worker re-raises the
wrapper with the whole worker traceback as its message, ``ConfigExpression`` adds ``Failed to evaluate ...``, and
ignite's engine and MONAI's ``StatsHandler`` log it (``logger.exception``: with a traceback) before re-raising.

:func:`install_excepthook` (called from the ``initialize`` list of a bundle config) makes such a run end with ONE
line, ``error: <message>`` on stderr, and exit status 2, as the project's own CLI does:

- a ``sys.excepthook`` finds the :class:`InputError` in the exception chain (``__cause__`` / ``__context__``) or in
  the text of a worker-wrapped message, prints the line and exits with status 2 (``atexit`` handlers run first);
  any other exception is passed to the previous hook unchanged;
- a logging filter drops ERROR records logged while an :class:`InputError` is being handled (ignite's "Engine run
  is terminating due to exception", ``StatsHandler``'s traceback), so no traceback precedes the line. It is put on
  the existing handlers (the root logger's, from the bundle's ``logging.conf``) and, through
  ``logging.setLoggerClass``, on loggers created later (``StatsHandler`` makes its own non-propagating logger when
  the evaluator is built, after ``initialize``). Other records, and every record of other exceptions, are kept.

Choice: the filter and hook stay installed for the rest of the process (a CLI run is one process); installing twice
is a no-op.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
from types import TracebackType

__all__ = ["InputError", "find_input_error", "input_error_message", "install_excepthook", "InputErrorLogFilter"]

# "spine_monai.errors.InputError: /x.nii.gz: ..." in a traceback text (DataLoader workers pass the text only)
_WRAPPED = re.compile(r"^(?:[\w.]+\.)?InputError: (.+)$", re.MULTILINE)


class InputError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` in ``exc``'s chain of causes and contexts, or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def input_error_message(exc: BaseException | None) -> str | None:
    """The one-line message of the :class:`InputError` behind ``exc`` (also a worker-wrapped one), or ``None``."""
    err = find_input_error(exc)
    if err is not None and not str(err).startswith("Caught "):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # torch's ExceptionWrapper: "Caught X in DataLoader worker ..."
        seen.add(id(exc))
        found = _WRAPPED.findall(str(exc))
        if found:
            return found[0].strip()
        exc = exc.__cause__ or exc.__context__
    return None


class InputErrorLogFilter(logging.Filter):
    """Drop ERROR records logged while an :class:`InputError` is raised or handled (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return input_error_message(exc) is None


_FILTER = InputErrorLogFilter()
_state: dict[str, object] = {}


class _FilteredLogger(logging.Logger):
    """A logger that starts with the :class:`InputErrorLogFilter`."""

    def __init__(self, name: str, level: int = logging.NOTSET) -> None:
        super().__init__(name, level)
        self.addFilter(_FILTER)


def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    message = input_error_message(exc)
    previous = _state.get("previous", sys.__excepthook__)
    if message is None:
        previous(exc_type, exc, tb)  # type: ignore[operator]
        return
    sys.stderr.write(f"error: {message}\n")
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(2)  # an excepthook cannot set the exit status otherwise (the interpreter exits with 1)


def install_excepthook(logger_names: tuple[str, ...] = ("", "ignite", "monai")) -> bool:
    """Report :class:`InputError` of a bundle run as one line and exit 2 (see the module docstring).

    Use it from a bundle config: ``"initialize": ["$spine_monai.errors.install_excepthook()", ...]``.

    Args:
        logger_names: loggers whose handlers get the :class:`InputErrorLogFilter` (``""`` is the root logger,
            where the bundles' ``logging.conf`` puts its handler).

    Returns:
        ``True`` (so the ``initialize`` entry has a value).
    """
    if sys.excepthook is not _hook:
        _state["previous"] = sys.excepthook
        sys.excepthook = _hook
    handlers = [h for name in logger_names for h in logging.getLogger(name).handlers]
    handlers += [h for lg in list(logging.root.manager.loggerDict.values()) for h in getattr(lg, "handlers", ())]
    if logging.lastResort is not None:  # used when logging is not configured
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    if not issubclass(logging.getLoggerClass(), _FilteredLogger):
        # loggers created later with their own handler and propagate=False (MONAI's get_logger, e.g. StatsHandler)
        logging.setLoggerClass(type("FilteredLogger", (_FilteredLogger, logging.getLoggerClass()), {}))
    return True
