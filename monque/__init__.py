"""Monque: a MongoDB-backed job queue and cron scheduler, sync and async."""

__version__ = "0.1.0"
