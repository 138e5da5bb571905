"""riverbed: a Kafka-style partitioned log and an event-time stream engine, in one package.

>>> import riverbed as rb
>>> rb.murmur2(b"21")
-973932308
"""

import os as _os

# The engine allocates and frees large per-step buffers. mimalloc (its allocator) keeps freed
# memory for 2 s before returning it to the OS, and uses no transparent huge pages: otherwise
# the kernel zeroes fresh pages (2 MiB at a time) over and over. Set before the extension loads;
# an explicit MIMALLOC_* environment variable wins.
_os.environ.setdefault("MIMALLOC_PURGE_DELAY", "2000")
_os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

from riverbed import exceptions  # noqa: E402
from riverbed._core import __version__, murmur2
from riverbed.expr import (
    Expr,
    col,
    count,
    count_distinct,
    first,
    last,
    lit,
    max,
    mean,
    min,
    std,
    sum,
    var,
    when,
)
from riverbed.log import Consumer, Log, Record, Topic
from riverbed.pipeline import Pipeline, RunResult
from riverbed.table import Table
from riverbed.training import training_set
from riverbed.windows import Window, count_window, hopping, session, sliding, tumbling

__all__ = [
    "Consumer",
    "Expr",
    "Log",
    "Pipeline",
    "Record",
    "RunResult",
    "Table",
    "Topic",
    "Window",
    "__version__",
    "col",
    "count",
    "count_distinct",
    "count_window",
    "exceptions",
    "first",
    "hopping",
    "last",
    "lit",
    "max",
    "mean",
    "min",
    "murmur2",
    "session",
    "sliding",
    "std",
    "sum",
    "training_set",
    "tumbling",
    "var",
    "when",
]
