"""riverbed's exceptions: one hierarchy, raised by the Rust core and the Python facade.

``RiverbedError`` is the base class. Errors of the embedded log derive from ``LogError``.
Wrong argument types raise the built-in ``TypeError``; wrong values raise ``ValueError``.
"""

from riverbed._core import (
    CorruptLog,
    DataGap,
    DecodeError,
    InternalTopicError,
    KafkaError,
    LogError,
    LogLocked,
    OffsetOutOfRange,
    PlanError,
    RiverbedError,
    SchemaError,
    ServerError,
    TopicConfigError,
    TopicNotFound,
)

__all__ = [
    "CorruptLog",
    "DataGap",
    "DecodeError",
    "InternalTopicError",
    "KafkaError",
    "LogError",
    "LogLocked",
    "OffsetOutOfRange",
    "PlanError",
    "RiverbedError",
    "SchemaError",
    "ServerError",
    "TopicConfigError",
    "TopicNotFound",
]
