"""riverbed's exceptions: one hierarchy, raised by the Rust core and the Python facade.

``RiverbedError`` is the base class; each kind of failure has its own class::

    RiverbedError
    ├── LogError                 the embedded log (I/O naming the file, a closed log)
    │   ├── TopicNotFound, OffsetOutOfRange, LogLocked, InternalTopicError, TopicConfigError
    │   └── CorruptLog
    │       └── DataGap          offsets that cannot be read (quarantined bytes, a lost segment)
    ├── PlanError                an invalid pipeline, named by operator and field
    │   └── CheckpointError      a named run cannot resume: damaged or foreign checkpoints, or
    │                            ones that do not fit the plan or its input (reset=True starts over)
    ├── SchemaError              data without the columns or types asked for
    ├── DecodeError              a record that could not be decoded (topic/partition@offset)
    ├── StorageError             a file of a run's state could not be read or written (its path)
    ├── KafkaError               a Kafka cluster failed
    │   ├── KafkaUnreachable, KafkaAuthenticationError, KafkaTopicNotFound, KafkaTimeout
    ├── ServerError              ``riverbed serve`` could not start or stop
    ├── UdfError                 a pipeline function failed where its own exception was lost
    └── InternalError            a bug in riverbed (a panic, with its message): please report it

A pipeline function's own exception (a ``ZeroDivisionError`` in a ``map``) reaches the caller as
itself. Wrong argument types raise the built-in ``TypeError``; wrong values raise ``ValueError``
(also a Kafka setting librdkafka refuses).
"""

from riverbed._core import (
    CheckpointError,
    CorruptLog,
    DataGap,
    DecodeError,
    InternalError,
    InternalTopicError,
    KafkaAuthenticationError,
    KafkaError,
    KafkaTimeout,
    KafkaTopicNotFound,
    KafkaUnreachable,
    LogError,
    LogLocked,
    OffsetOutOfRange,
    PlanError,
    RiverbedError,
    SchemaError,
    ServerError,
    StorageError,
    TopicConfigError,
    TopicNotFound,
    UdfError,
)

__all__ = [
    "CheckpointError",
    "CorruptLog",
    "DataGap",
    "DecodeError",
    "InternalError",
    "InternalTopicError",
    "KafkaAuthenticationError",
    "KafkaError",
    "KafkaTimeout",
    "KafkaTopicNotFound",
    "KafkaUnreachable",
    "LogError",
    "LogLocked",
    "OffsetOutOfRange",
    "PlanError",
    "RiverbedError",
    "SchemaError",
    "ServerError",
    "StorageError",
    "TopicConfigError",
    "TopicNotFound",
    "UdfError",
]
