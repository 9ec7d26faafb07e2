"""A web dashboard for Monque (the ``dashboard`` extra): queue overview, jobs with filters and
keyset paging, job detail, schedules, live updates, and (when enabled) actions.

``create_app(db)`` returns an ASGI app to mount in a FastAPI/Starlette app or to serve with
``monque dashboard``; see docs/dashboard.md.
"""

from monque.dashboard.app import create_app
from monque.dashboard.queries import DASHBOARD_INDEXES, JobFilter
from monque.dashboard.security import Auth

__all__ = ["DASHBOARD_INDEXES", "Auth", "JobFilter", "create_app"]
