"""Monque: a MongoDB-backed job queue and cron scheduler, sync and async."""

from monque.connection import normalize_database
from monque.engine import Monque
from monque.errors import (
    ConnectionError,
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

__version__ = "0.1.0"

__all__ = [
    "ConnectionError",
    "Events",
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
    "Monque",
    "MonqueError",
    "MonqueOptions",
    "PayloadTooLargeError",
    "PermanentError",
    "QueueStats",
    "ShutdownStalledError",
    "ShutdownTimeoutError",
    "UniqueKeyConflictError",
    "UnknownJobError",
    "WorkerRegistrationError",
    "normalize_database",
]
