"""What a person reads while the pipeline runs: Python logging, step lines, expected noise.

The stages log through ``logging.getLogger("electra.<module>")``; the doors (the CLI
with ``--log-level``, the Prefect flow) choose the level and where it goes. Third-party
libraries stay at WARNING, and the noise that is *expected* at a given place (the report
transformers prints when a new classifier head is initialised on purpose) is dropped
there and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Send ``electra.*`` records at ``level`` and everyone else's at WARNING to stderr.

    Idempotent: a second call replaces the handler instead of doubling every line.
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level {level!r}: choose one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.set_name("electra")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "electra"]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Other libraries speak only when something is wrong (or everything, when debugging).
    root.setLevel(logging.DEBUG if name == "DEBUG" else logging.WARNING)
    logging.getLogger("electra").setLevel(name)
    # MLflow keeps a handler of its own at INFO ("Creating initial MLflow database tables",
    # system-metrics start and stop): it reads its level from this variable when imported,
    # and its logger is set here for the case it already is.
    mlflow_level = "DEBUG" if name == "DEBUG" else "WARNING"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", mlflow_level)
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())


class _DropLoadReport(logging.Filter):
    """Drops transformers' LOAD REPORT record, keeping a one-line note at DEBUG."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            logging.getLogger("electra.core.logs").debug("expected load report dropped (%s)", self.why)
            return False
        return True


@contextlib.contextmanager
def expected_new_head(why: str = "a task head is initialised from scratch") -> Iterator[None]:
    """While loading a pretrained encoder into a model with a new head, drop the table of
    "missing" head weights that transformers prints: it is the point of the load.

    Only that record, only on transformers' loading logger, only inside this block: a
    report anywhere else (an encoder weight that did not load) is still shown.
    """
    logger = logging.getLogger("transformers.modeling_utils")
    dropper = _DropLoadReport(why)
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StepLog:
    """A log line every few steps for runs nobody watches on a terminal (DVC, CI, a worker).

    ``update(step, **numbers)`` writes ``<what> step 120/300 (40%) loss 3.21 tokens/s 12,345
    ETA 0:42`` when at least ``every_s`` seconds passed since the last line, and always at
    the last step. The ETA comes from this process's rate (a resumed run counts from where
    it resumed).
    """

    def __init__(self, what: str, total: int, start: int = 0, every_s: float = 10.0,
                 logger: logging.Logger | None = None, enabled: bool = True) -> None:
        self.what, self.total, self.start, self.every_s = what, total, start, every_s
        self.logger = logger or logging.getLogger("electra.progress")
        self.enabled = enabled
        self.started = self.last = time.monotonic()

    def update(self, step: int, **numbers: float) -> bool:
        """Maybe log a line for ``step``; True when one was written."""
        now = time.monotonic()
        if not self.enabled or (step < self.total and now - self.last < self.every_s):
            return False
        self.last = now
        done = step - self.start
        rate = done / max(1e-9, now - self.started)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = [f"{self.what} step {step:,}/{self.total:,} ({100 * step / max(1, self.total):.0f}%)"]
        for key, value in numbers.items():
            if value is None:
                continue
            parts.append(f"{key} {value:,.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        parts.append(f"elapsed {_clock(now - self.started)}")
        if step < self.total and eta == eta:
            parts.append(f"ETA {_clock(eta)}")
        self.logger.info(" ".join(parts))
        return True
