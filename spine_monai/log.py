"""One log format for every command: ``HH:MM:SS LEVEL logger: message``, warnings of dependencies printed once.

:func:`setup_logging` is called by the CLI before a command runs. It puts one handler on the root logger and makes
MONAI's loggers use it: ``monai.apps.utils.get_logger`` gives each MONAI logger (``monai.bundle.workflows``,
``monai.handlers.StatsHandler``, ...) its own stdout handler with another format and turns propagation off, at import
and again each time a handler is built. Loggers named ``monai`` / ``monai.*`` therefore drop console handlers and
always propagate (a :class:`logging.Logger` subclass set with :func:`logging.setLoggerClass` for those created later;
existing ones are fixed in place). Loggers with file handlers are left alone.

Python warnings (``warnings.warn``) are logged by the ``py.warnings`` logger in the same format, each text once per
process. The standard ``warnings`` registry prints a warning again whenever any code changes the warning filters
(``warnings.catch_warnings`` per case is common), so a dependency's deprecation warning would otherwise be printed for
every case. Repeated identical WARNING records of other libraries' loggers are dropped the same way. Which warnings are
shown (the filters) is not changed. The ONNX exporter's per-rewrite INFO lines (``onnx_ir``, ``onnxscript``) are
not shown.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

__all__ = ["LOG_FORMAT", "DATE_FORMAT", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
_ADOPTED = ("monai",)  # logger name prefixes whose own console handlers are replaced by the root handler
_OWN = "spine_monai"
_QUIET = ("onnx_ir", "onnxscript")  # INFO lines about each graph rewrite of an ONNX export: WARNING and above only


def _adopted(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _ADOPTED)


def _is_console(handler: logging.Handler) -> bool:
    """A plain ``StreamHandler`` writing to the process's stdout or stderr (not a file or a test capture)."""
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    return type(handler) is logging.StreamHandler and id(getattr(handler, "stream", None)) in consoles


class _OneFormatLogger(logging.Logger):
    """A logger that, when its name is adopted (``monai.*``), keeps no console handler and propagates unless it has
    handlers of its own (a file, say); other loggers behave as :class:`logging.Logger`."""

    @property  # type: ignore[override]
    def propagate(self) -> bool:
        if _adopted(self.name) and not self.handlers:
            return True
        return self.__dict__.get("_propagate", True)

    @propagate.setter
    def propagate(self, value: bool) -> None:
        self.__dict__["_propagate"] = bool(value)

    def addHandler(self, hdlr: logging.Handler) -> None:  # noqa: N802 (logging's name)
        if _adopted(self.name) and _is_console(hdlr):
            return
        super().addHandler(hdlr)


def _adopt_existing() -> None:
    """Fix loggers created before :func:`setup_logging` (MONAI imported first): drop console handlers, propagate."""
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and _adopted(name):
            for h in [h for h in lg.handlers if _is_console(h)]:
                lg.removeHandler(h)
            if not lg.handlers:
                lg.propagate = True


class _OncePerProcess(logging.Filter):
    """Drop a WARNING record whose logger and text were already printed, unless it comes from this package (whose
    warnings name a case or file and are meant per case)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or record.name == _OWN or record.name.startswith(_OWN + "."):
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _short_path(filename: str) -> str:
    """``.../site-packages/monai/x.py`` -> ``monai/x.py``; other paths as given."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    return filename


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: one ``py.warnings`` log record per warning text and category."""
    key = (category.__name__, str(message))
    if key in _SEEN_WARNINGS:
        return
    _SEEN_WARNINGS.add(key)
    logging.getLogger("py.warnings").warning("%s: %s (%s:%d)", category.__name__, message, _short_path(filename),
                                             lineno)


_SEEN_WARNINGS: set[tuple[str, str]] = set()


class _StderrHandler(logging.StreamHandler):
    """A ``StreamHandler`` on whatever ``sys.stderr`` is when a record is written (so a replaced stderr, such as a
    test's capture, is honoured and a closed one never kept)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ / setStream assign it; the property wins
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Write the line; when tqdm is loaded, through ``tqdm.write``, which lifts a progress bar drawn on stderr
        (ignite's ``ProgressBar``) so that the line does not land in the middle of it."""
        tqdm_module = sys.modules.get("tqdm")
        if tqdm_module is None:
            super().emit(record)
            return
        try:
            tqdm_module.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging reports a failing handler and never raises
            self.handleError(record)


def setup_logging(level: int | str = logging.INFO) -> logging.Handler:
    """Configure logging once per process (later calls only set the level); return the root handler.

    Log lines go to stderr, so stdout holds only a command's result.

    Args:
        level: root log level (``logging.INFO`` or a name such as ``"DEBUG"``).

    Returns:
        The root handler (format :data:`LOG_FORMAT`, time as :data:`DATE_FORMAT`).
    """
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler.addFilter(_OncePerProcess())
        root.addHandler(handler)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    if logging.getLoggerClass() is logging.Logger:
        logging.setLoggerClass(_OneFormatLogger)
    _adopt_existing()
    warnings.showwarning = _showwarning
    return handler
