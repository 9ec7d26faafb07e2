"""The dashboard's ASGI app: pages, actions and live updates over one ``Monque`` engine."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

from bson import ObjectId
from bson.errors import InvalidId
from jinja2 import Environment, PackageLoader, select_autoescape
from pymongo.errors import OperationFailure, PyMongoError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from monque import management as mg
from monque.cron import next_run
from monque.dashboard import queries as q
from monque.dashboard.live import events
from monque.dashboard.security import Auth, Guard, check_csrf, csrf_token, set_csrf_cookie
from monque.display import dumps, iso
from monque.engine import Monque
from monque.errors import (
    InvalidJobDocumentError,
    InvalidOptionError,
    JobNotFoundError,
    JobStateError,
    MonqueError,
    UniqueKeyConflictError,
    brief,
)
from monque.job import Job
from monque.storage.calls import Call, JobCollection, Operation
from monque.storage.indexes import ensure_models

__all__ = ["Dashboard", "create_app"]

log = logging.getLogger("monque.dashboard")
R = TypeVar("R")
Handler = Callable[[Request], Awaitable[Response]]

ACTIONS = ("retry", "cancel", "delete", "reschedule")
OVERVIEW_MAX_AGE = 2.0  # seconds an overview's figures are served to further requests
_FRAGMENT = "x-monque-fragment"
# What a redirect after an action may announce (never free text from the URL).
_DONE = re.compile(r"^(retry|cancel|delete|deleted|reschedule)(:[0-9]{1,9})?$")
_STATIC = Path(__file__).with_name("static")
_UNAUTHORIZED = 13
# ObjectIds hold seconds since 1970 in four bytes: creation-time bounds must fit.
_FIRST, _LAST = datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2106, 1, 1, tzinfo=timezone.utc)


class BadRequest(MonqueError):
    """A query string or form the dashboard cannot read (shown as a 400 page)."""


class SelectionChanged(MonqueError):
    """More jobs match a bulk action than its preview counted (a 409 page)."""


class Dashboard:
    """The state behind the app: the engine, the instances collection, the templates."""

    def __init__(
        self,
        db: object,
        *,
        database: str | None,
        collection: str,
        allow_actions: bool,
        create_indexes: bool,
        poll_interval: float,
        title: str,
    ) -> None:
        self.engine = Monque(db, database=database, collection=collection, create_indexes=False)
        self.instances = JobCollection(self.engine.database, f"{collection}_instances")
        self.allow_actions = allow_actions
        self.create_indexes = create_indexes
        self.poll_interval = poll_interval
        self.title = title
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        self._overview_lock: asyncio.Lock | None = None
        self._overview: tuple[float, dict[str, Any]] | None = None
        self._changed_at = 0.0
        self.indexes: frozenset[str] = frozenset()  # names of the indexes that exist
        self.templates = Environment(
            loader=PackageLoader("monque.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["iso"] = lambda v: iso(v) if isinstance(v, datetime) else ""
        self.templates.filters["json"] = dumps

    async def ready(self) -> None:
        # Lazily, not in a lifespan: an app mounted under another one never sees its lifespan.
        if self._ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:  # concurrent first requests build the indexes once
            if self.is_ready():
                return
            await self.engine.initialize()  # the server clock (create_indexes=False)
            if self.create_indexes:
                own = {str(m.document["name"]) for m in q.DASHBOARD_INDEXES}
                try:
                    await self.engine.jobs.run(ensure_models(q.DASHBOARD_INDEXES, own))
                except OperationFailure as exc:
                    if exc.code != _UNAUTHORIZED:
                        raise
                    # A read-only user: serve with the indexes there are, and say what to do.
                    log.warning(
                        "dashboard: not allowed to create its indexes (%s); pages may be slow. "
                        "Create them as an admin (docs/dashboard.md lists them) or pass "
                        "--no-create-indexes",
                        brief(exc),
                    )
            existing = await self.engine.jobs.call(Call("list_indexes"))
            self.indexes = frozenset(str(spec.get("name")) for spec in existing)
            self._ready = True

    def is_ready(self) -> bool:
        return self._ready

    async def run(self, operation: Operation[R]) -> R:
        await self.ready()
        return await self.engine.jobs.run(operation)

    def now(self) -> datetime:
        return self.engine.clock.now()

    async def overview(self) -> dict[str, Any]:
        """The overview's figures, shared by every request for ``OVERVIEW_MAX_AGE`` seconds:
        open tabs reloading on each change cost one computation, not one each."""
        if self._overview_lock is None:
            self._overview_lock = asyncio.Lock()
        async with self._overview_lock:
            cached = self._overview
            # Valid while young and begun after the last change a live stream saw (a write
            # during the computation makes it stale: the stream's next event recomputes).
            if (
                cached is not None
                and cached[0] > self._changed_at
                and time.monotonic() - cached[0] < OVERVIEW_MAX_AGE
            ):
                return cached[1]
            started = time.monotonic()
            figures = await self._compute_overview()
            self._overview = (started, figures)
            return figures

    def note_change(self) -> None:
        """A live stream saw a write to the jobs collection."""
        self._changed_at = time.monotonic()

    async def _compute_overview(self) -> dict[str, Any]:
        await self.ready()
        now = self.now()

        async def counts() -> tuple[dict[str, dict[str, int]], dict[str, int], int]:
            every = await self.run(q.counts_by_name(self.indexes))
            totals = {s: sum(c[s] for c in every.values()) for s in q.STATUSES}
            shown = dict(list(every.items())[: q.MAX_NAMES])
            return shown, totals, len(every) - len(shown)

        # Independent reads, in flight together.
        (by_name, totals, more), minutes, live, running = await asyncio.gather(
            counts(),
            self.run(q.throughput(now, indexes=self.indexes)),
            self.instances.run(mg.live_instances(now)),
            self.run(q.running_jobs()),
        )
        held: dict[str, list[Job[Any]]] = {}
        for job in running:
            held.setdefault(job.claimed_by or "?", []).append(job)
        known = {w.id for w in live}
        return {
            "totals": totals,
            "by_name": by_name,
            "more_names": more,
            "chart": _chart(minutes),
            "workers": live,
            "held": held,
            "running_shown": len(running),
            "foreign": {k: v for k, v in held.items() if k not in known},
            "counted_at": now,
        }

    # -- rendering ------------------------------------------------------------------------

    def render(
        self, request: Request, page: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        token, new = csrf_token(request)
        fragment = request.headers.get(_FRAGMENT) == "1" and f"{page}_live.html" in (
            self.templates.list_templates()
        )
        template = self.templates.get_template(f"{page}_live.html" if fragment else f"{page}.html")
        html = template.render(
            request=request,
            prefix=request.scope.get("root_path", "").rstrip("/"),
            title=self.title,
            page=page,
            read_only=not self.allow_actions,
            csrf=token,
            now=self.now(),
            **context,
        )
        response = HTMLResponse(html, status_code)
        response.headers["cache-control"] = "no-store"
        if new:
            set_csrf_cookie(response, request, token)
        return response

    def problem(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.render(request, "error", status_code, message=message)


# -- request parsing ---------------------------------------------------------------------


def _one(params: Mapping[str, list[str]], key: str, *, strip: bool = True) -> str | None:
    """The last value of ``key``; empty means absent. Names and search text keep their
    spaces (``"mail "`` is another job name than ``"mail"``)."""
    values = params.get(key) or []
    value = values[-1] if values else ""
    value = value.strip() if strip else value
    return value or None


def _object_id(value: str | None, what: str) -> ObjectId | None:
    if value is None:
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise BadRequest(f"{what} must be a job id (24 hex digits), got {value!r}") from None


def _time(value: str | None, offset: str | None, what: str) -> datetime | None:
    """An ISO time; one without an offset is the viewer's local time, ``offset`` minutes
    behind UTC (the page's script sends ``Date.getTimezoneOffset()``), else UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what} must be a date and time, got {value!r}") from None
    if parsed.tzinfo is not None:
        return _in_range(parsed, value, what)
    minutes = 0
    if offset is not None:
        try:
            minutes = int(offset)
        except ValueError:
            raise BadRequest(f"tz must be whole minutes, got {offset!r}") from None
        if not -24 * 60 <= minutes <= 24 * 60:
            raise BadRequest(f"tz must be whole minutes, got {offset!r}")
    try:
        shifted = parsed + timedelta(minutes=minutes)
    except OverflowError:
        raise BadRequest(f"{what} is out of range: {value!r}") from None
    return _in_range(shifted.replace(tzinfo=timezone.utc), value, what)


def _in_range(when: datetime, value: str, what: str) -> datetime:
    try:
        utc = when.astimezone(timezone.utc)
    except OverflowError:
        raise BadRequest(f"{what} is out of range: {value!r}") from None
    if not _FIRST <= utc < _LAST:
        raise BadRequest(f"{what} must be between 1970 and 2105, got {value!r}")
    return utc


def job_filter(params: Mapping[str, list[str]]) -> q.JobFilter:
    statuses = tuple(dict.fromkeys(s for s in params.get("status", []) if s))
    unknown = [s for s in statuses if s not in q.STATUSES]
    if unknown:
        raise BadRequest(f"unknown status {unknown[0]!r}; use {', '.join(q.STATUSES)}")
    tz = _one(params, "tz")
    return q.JobFilter(
        name=_one(params, "name", strip=False),
        statuses=statuses,
        created_from=_time(_one(params, "from"), tz, "from"),
        created_to=_time(_one(params, "to"), tz, "to"),
        reason=_one(params, "reason", strip=False),
    )


def filter_params(flt: q.JobFilter) -> list[tuple[str, str]]:
    """``flt`` as query parameters (times in UTC), for links that keep the filter."""
    out: list[tuple[str, str]] = []
    if flt.name is not None:
        out.append(("name", flt.name))
    out += [("status", s) for s in flt.statuses]
    if flt.created_from is not None:
        out.append(("from", iso(flt.created_from)))
    if flt.created_to is not None:
        out.append(("to", iso(flt.created_to)))
    if flt.reason is not None:
        out.append(("reason", flt.reason))
    return out


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query, keep_blank_values=True)


async def _form(request: Request) -> dict[str, list[str]]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("actions are posted as forms (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > 64 * 1024:
        raise BadRequest("form too large")
    try:
        return parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise BadRequest("form is not UTF-8") from None


def _flat(form: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: v[-1] for k, v in form.items() if v}


# -- pages --------------------------------------------------------------------------------


def _chart(minutes: list[tuple[datetime, int, int]]) -> dict[str, Any]:
    """Bars for the SVG chart: (x, height of completed, height of failed, label)."""
    height, width = 100, 6
    top = max([done + failed for _, done, failed in minutes] + [1])
    bars = []
    for i, (minute, done, failed) in enumerate(minutes):
        h_done = round(done / top * height, 1)
        h_failed = round(failed / top * height, 1)
        bars.append(
            {
                "x": i * (width + 2),
                "done_y": height - h_done,
                "done_h": h_done,
                "failed_y": height - h_done - h_failed,
                "failed_h": h_failed,
                "label": f"{minute:%H:%M} UTC: {done} completed, {failed} failed",
            }
        )
    return {
        "bars": bars,
        "width": len(minutes) * (width + 2),
        "height": height,
        "bar": width,
        "top": top,
        "completed": sum(d for _, d, _ in minutes),
        "failed": sum(f for _, _, f in minutes),
    }


def _pages(dash: Dashboard) -> list[Route]:
    async def overview(request: Request) -> Response:
        return dash.render(request, "overview", **(await dash.overview()))

    async def jobs(request: Request) -> Response:
        params = _query(request)
        flt = job_filter(params)
        before = _object_id(_one(params, "before"), "before")
        after = _object_id(_one(params, "after"), "after")
        page = await dash.run(q.list_jobs(flt, before=before, after=after))
        keep = filter_params(flt)
        return dash.render(
            request,
            "jobs",
            flt=flt,
            result=page,
            keep=urlencode(keep),
            older=urlencode([*keep, ("before", page.older)]) if page.older else None,
            newer=urlencode([*keep, ("after", page.newer)]) if page.newer else None,
            statuses=q.STATUSES,
            bulk_actions=ACTIONS,
            done=_done(request),
        )

    async def job_detail(request: Request) -> Response:
        job_id = _object_id(request.path_params["job_id"], "the job id")
        assert job_id is not None
        job = await dash.run(q.get_row(job_id))
        if job is None:
            return dash.problem(request, 404, f"no job {job_id} (deleted, or never there)")
        return dash.render(request, "job", job=job, done=_done(request))

    async def schedules(request: Request) -> Response:
        now = dash.now()
        rows = []
        for job in await dash.run(q.schedules()):
            runs: list[datetime] = []
            error = None
            if isinstance(job, q.BadRow):
                rows.append(q.ScheduleRow(job, runs, job.problem))
                continue
            try:
                after = now
                for _ in range(3):
                    after = next_run(job.repeat_interval or "", after, job.timezone)
                    runs.append(after)
            except Exception as exc:  # a schedule this host cannot evaluate: say so, go on
                error = brief(exc)
            rows.append(q.ScheduleRow(job, runs, error))
        return dash.render(request, "schedules", rows=rows)

    async def live(request: Request) -> Response:
        await dash.ready()
        return StreamingResponse(
            events(
                dash.engine.jobs,
                poll_interval=dash.poll_interval,
                on_change=dash.note_change,
                # A browser's retry sends Last-Event-ID; a page resuming after a pause says so.
                resumed="last-event-id" in request.headers or "resumed" in request.query_params,
            ),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [
        Route("/", overview, name="overview"),
        Route("/jobs", jobs, name="jobs"),
        Route("/jobs/{job_id}", job_detail, name="job"),
        Route("/schedules", schedules, name="schedules"),
        Route("/live", live, name="live"),
    ]


# -- actions ------------------------------------------------------------------------------


def _actions(dash: Dashboard) -> list[Route]:
    async def guarded(request: Request) -> dict[str, list[str]]:
        if not dash.allow_actions:
            raise PermissionError(
                "this dashboard is read-only; start it with --allow-actions "
                "(create_app(..., allow_actions=True)) to retry, cancel, delete or reschedule"
            )
        form = await _form(request)
        refused = check_csrf(request, _flat(form))
        if refused is not None:
            raise PermissionError(refused)
        return form

    async def act(request: Request) -> Response:
        form = _flat(await guarded(request))
        action = request.path_params["action"]
        job_id = _object_id(request.path_params["job_id"], "the job id")
        assert job_id is not None
        engine = dash.engine
        await dash.ready()
        if action not in ACTIONS:
            return dash.problem(request, 404, f"unknown action {action!r}")
        run_at = None
        if action == "reschedule":
            run_at = _time(form.get("run_at") or None, form.get("tz") or None, "run_at")
            if run_at is None:
                raise BadRequest("reschedule needs run_at, a date and time")
        try:
            if action == "retry":
                await engine.retry_job(job_id)
            elif action == "cancel":
                await engine.cancel_job(job_id)
            elif action == "delete":
                await engine.delete_job(job_id)
            else:
                assert run_at is not None
                await engine.reschedule_job(job_id, run_at)
        except InvalidJobDocumentError:
            pass  # written; only reading the (malformed) document back as a Job failed
        if action == "delete":
            return RedirectResponse(f"{_prefix(request)}/jobs?done=deleted", 303)
        return RedirectResponse(f"{_prefix(request)}/jobs/{job_id}?done={action}", 303)

    def _bulk_args(params: Mapping[str, list[str]]) -> tuple[str, q.JobFilter]:
        action = _one(params, "action")
        if action not in ACTIONS:
            raise BadRequest(f"bulk action must be one of {', '.join(ACTIONS)}, got {action!r}")
        return action, job_filter(params)

    async def bulk_preview(request: Request) -> Response:
        params = _query(request)
        action, flt = _bulk_args(params)
        selected = mg.bulk_filter(action, flt.query())
        count, upto = await asyncio.gather(
            dash.run(q.count_matching(selected)), dash.run(q.newest_id(selected))
        )
        touched = [s.value for s in mg.BULK_STATUSES[action]]
        return dash.render(
            request,
            "bulk",
            action=action,
            flt=flt,
            count=count,
            upto=str(upto) if upto is not None else "",
            touched=touched,
            keep=filter_params(flt),
            back=urlencode(filter_params(flt)),
        )

    async def bulk(request: Request) -> Response:
        params = await guarded(request)
        form = _flat(params)
        action, flt = _bulk_args(params)
        if flt.is_empty and form.get("confirm_all") != "yes":
            raise BadRequest("a bulk action over every job needs confirm_all=yes")
        # What the preview counted: jobs up to its newest one, and no more of them than it said
        # (jobs that arrived, or moved into the selection, since then are not touched blindly).
        upto = _object_id(form.get("upto") or None, "upto")
        try:
            expected = int(form.get("expected", ""))
        except ValueError:
            raise BadRequest(
                "a bulk action is confirmed from its preview (expected count)"
            ) from None
        if upto is None:
            raise BadRequest("a bulk action is confirmed from its preview (upto)")
        query = {**flt.query(), "$and": [{"_id": {"$lte": upto}}]}
        now = dash.now()
        retention = dash.engine.options.retention
        await dash.ready()
        current = await dash.run(q.count_matching(mg.bulk_filter(action, query)))
        if current > expected:
            raise SelectionChanged(
                f"{current} jobs match now, {expected} when you previewed: preview again"
            )
        if action == "cancel":
            n = await dash.run(mg.cancel_matching(query, now, retention))
        elif action == "retry":
            n = await dash.run(mg.retry_matching(query, now))
        elif action == "delete":
            n = await dash.run(mg.delete_matching(query))
        else:
            run_at = _time(form.get("run_at") or None, form.get("tz") or None, "run_at")
            if run_at is None:
                raise BadRequest("reschedule needs run_at, a date and time")
            n = await dash.run(mg.reschedule_matching(query, run_at, now))
        back = urlencode([*filter_params(flt), ("done", f"{action}:{n}")])
        return RedirectResponse(f"{_prefix(request)}/jobs?{back}", 303)

    return [
        Route("/jobs/{job_id}/{action}", act, methods=["POST"], name="act"),
        Route("/bulk", bulk_preview, methods=["GET"], name="bulk_preview"),
        Route("/bulk", bulk, methods=["POST"], name="bulk"),
    ]


def _done(request: Request) -> str | None:
    done = _one(_query(request), "done")
    return done if done is not None and _DONE.match(done) else None


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# -- errors ----------------------------------------------------------------------------


def _errors(dash: Dashboard) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    async def bad_request(request: Request, exc: Exception) -> Response:
        return dash.problem(request, 400, str(exc))

    async def forbidden(request: Request, exc: Exception) -> Response:
        return dash.problem(request, 403, str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return dash.problem(request, 404, str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        return dash.problem(request, 409, str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        log.error("dashboard: %s", exc)
        return dash.problem(request, 500, brief(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("dashboard: database error: %s", exc)
        return dash.problem(request, 503, f"MongoDB did not answer: {brief(exc)}")

    return {
        BadRequest: bad_request,
        InvalidOptionError: bad_request,
        PermissionError: forbidden,
        JobNotFoundError: not_found,
        JobStateError: conflict,
        SelectionChanged: conflict,
        UniqueKeyConflictError: conflict,
        ConnectionError: unavailable,
        PyMongoError: unavailable,
        MonqueError: failed,
    }


def create_app(
    db: object,
    *,
    database: str | None = None,
    collection: str = "monque_jobs",
    allow_actions: bool = False,
    auth: Auth | None = None,
    create_indexes: bool = True,
    poll_interval: float = 5.0,
    title: str = "Monque",
) -> Starlette:
    """The dashboard as an ASGI app over ``db`` (any handle ``Monque`` accepts; an async one
    serves best). Mount it in a FastAPI/Starlette app behind that app's auth, or serve it with
    ``monque dashboard``.

    Read-only unless ``allow_actions``; ``auth`` (basic and/or bearer) guards every request
    when it is served on its own. ``create_indexes`` adds the five indexes its queries use
    (``monque.dashboard.queries.DASHBOARD_INDEXES``) on the first request.
    """
    if poll_interval <= 0:
        raise InvalidOptionError("poll_interval must be > 0 seconds")
    dash = Dashboard(
        db,
        database=database,
        collection=collection,
        allow_actions=allow_actions,
        create_indexes=create_indexes,
        poll_interval=poll_interval,
        title=title,
    )
    app = Starlette(
        routes=[
            *_pages(dash),
            *_actions(dash),
            Mount("/static", StaticFiles(directory=_STATIC), name="static"),
        ],
        middleware=[Middleware(Guard, auth=auth)],
        exception_handlers=_errors(dash),
    )
    app.state.dashboard = dash
    return app
