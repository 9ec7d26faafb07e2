"""Monque: a MongoDB-backed job queue and cron scheduler, sync and async."""

from monque.connection import normalize_database
from monque.engine import Monque
from monque.errors import (
    ConnectionError,
    HandlerCancelledError,
    IndexConflictError,
    InstanceIdConflictError,
    InvalidCronError,
    InvalidJobDocumentError,
    InvalidJobNameError,
    InvalidOptionError,
    InvalidPayloadError,
    InvalidScheduleError,
    InvalidUniqueKeyError,
    JobCancelledError,
    JobLostError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    MonqueError,
    OutcomeNotStoredError,
    PayloadTooLargeError,
    PermanentError,
    ShutdownStalledError,
    ShutdownTimeoutError,
    UniqueKeyConflictError,
    UnknownJobError,
    WorkerRegistrationError,
)
from monque.events import Events
from monque.job import Job, JobStatus
from monque.management import JobPage, JobSelector, QueueStats
from monque.options import MonqueOptions
from monque.worker import RunState
from monque.worker.supervisor import LoopCrashedError

__version__ = "0.1.0"

__all__ = [
    "ConnectionError",
    "Events",
    "HandlerCancelledError",
    "IndexConflictError",
    "InstanceIdConflictError",
    "InvalidCronError",
    "InvalidJobDocumentError",
    "InvalidJobNameError",
    "InvalidOptionError",
    "InvalidPayloadError",
    "InvalidScheduleError",
    "InvalidUniqueKeyError",
    "Job",
    "JobCancelledError",
    "JobLostError",
    "JobNotFoundError",
    "JobPage",
    "JobSelector",
    "JobStateError",
    "JobStatus",
    "JobTimeoutError",
    "LoopCrashedError",
    "Monque",
    "MonqueError",
    "MonqueOptions",
    "OutcomeNotStoredError",
    "PayloadTooLargeError",
    "PermanentError",
    "QueueStats",
    "RunState",
    "ShutdownStalledError",
    "ShutdownTimeoutError",
    "UniqueKeyConflictError",
    "UnknownJobError",
    "WorkerRegistrationError",
    "normalize_database",
]
