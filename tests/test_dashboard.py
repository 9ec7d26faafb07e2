"""The web dashboard over HTTP (no browser): pages, filters and keyset paging, escaping,
actions with CSRF, read-only mode, auth, bulk previews, live events, the CLI command.

Browser tests are in test_dashboard_browser.py; the explain test (mongod only) in
test_dashboard_explain.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database

pytest.importorskip("starlette")
import httpx
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount

from monque import Monque
from monque.cli import cli
from monque.dashboard import DASHBOARD_INDEXES, Auth, JobFilter, create_app
from monque.dashboard import queries as q
from monque.dashboard.app import BadRequest, _chart, _time, job_filter

UTC = timezone.utc
ROW = re.compile(r'<tr data-id="([0-9a-f]{24})">')


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def doc(name: str, status: str = "pending", **fields: Any) -> dict[str, Any]:
    t = now()
    base: dict[str, Any] = {
        "name": name,
        "data": {"n": 1},
        "status": status,
        "nextRunAt": t,
        "failCount": 0,
        "createdAt": t,
        "updatedAt": t,
    }
    return {**base, **fields}


def failed(name: str, reason: str = "boom", **fields: Any) -> dict[str, Any]:
    return doc(name, "failed", failCount=3, failReason=reason, failedAt=now(), **fields)


def client_for(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://dash.test", **kw
    )


@pytest_asyncio.fixture
async def jobs(async_mongo_db: AsyncDatabase[dict[str, Any]]) -> Any:
    return async_mongo_db["monque_jobs"]


@pytest_asyncio.fixture
async def web(async_mongo_db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(async_mongo_db)) as client:
        yield client


@pytest_asyncio.fixture
async def admin(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
) -> AsyncIterator[httpx.AsyncClient]:
    """A dashboard with actions enabled, its CSRF cookie already set by a first page."""
    async with client_for(create_app(async_mongo_db, allow_actions=True)) as client:
        first = await client.get("/jobs")
        assert first.status_code == 200
        assert client.cookies.get("monque_csrf")
        yield client


def csrf(client: httpx.AsyncClient) -> str:
    token = client.cookies.get("monque_csrf")
    assert token
    return token


async def post(client: httpx.AsyncClient, path: str, **form: Any) -> httpx.Response:
    return await client.post(path, data={"csrf": csrf(client), **form})


# -- pages ------------------------------------------------------------------------------


async def test_overview_counts_per_status_and_name_chart_and_workers(
    jobs: Any, web: httpx.AsyncClient, make_monque: Any
) -> None:
    t = now()
    await jobs.insert_many(
        [doc("mail") for _ in range(3)]
        + [doc("mail", "completed", completedAt=t - timedelta(minutes=5)) for _ in range(4)]
        + [failed("resize") for _ in range(2)]
        + [doc("resize", "cancelled")]
        # Outside the chart's hour: counted by status, not in the chart.
        + [doc("old", "completed", completedAt=t - timedelta(hours=3))]
    )
    started = asyncio.Event()
    release = asyncio.Event()
    worker: Monque = make_monque()

    @worker.worker("hold")
    async def hold(job: Any) -> None:
        started.set()
        await release.wait()

    await worker.start()
    await worker.enqueue("hold", {})
    await asyncio.wait_for(started.wait(), 10)
    try:
        page = (await web.get("/")).text
    finally:
        release.set()
    totals = {s: n for n, s in re.findall(r'<span class="count">(\d+)</span> (\w+)</a>', page)}
    assert totals == {
        "pending": "3",
        "processing": "1",
        "completed": "5",
        "failed": "2",
        "cancelled": "1",
    }
    assert "5 completed" not in page  # the chart holds the last hour only
    assert re.search(r"(?s)</span> 4 completed · .*?</span> 2 failed attempts", page)
    names = re.findall(r'class="job-name">([^<]+)</a>', page)
    assert names == ["hold", "mail", "old", "resize"]
    assert worker.instance_id in page
    assert re.search(rf"(?s){re.escape(worker.instance_id)}.*?>hold</a>", page)


async def test_jobs_page_filters_by_name_status_reason_and_time(
    jobs: Any, web: httpx.AsyncClient
) -> None:
    old = ObjectId.from_datetime(now() - timedelta(days=2))
    await jobs.insert_many(
        [
            {**failed("mail", "SMTP timeout"), "_id": old},
            failed("mail", "bad address"),
            failed("resize", "Timeout reading image"),
            doc("mail"),
            doc("resize"),
        ]
    )

    async def rows(query: str) -> list[dict[str, Any]]:
        response = await web.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text
        found = []
        for job_id in ROW.findall(response.text):
            found.append(await jobs.find_one({"_id": ObjectId(job_id)}))
        return found

    assert len(await rows("")) == 5
    assert {d["name"] for d in await rows("name=mail")} == {"mail"}
    assert len(await rows("name=mail")) == 3
    assert len(await rows("status=failed")) == 3
    assert len(await rows("status=failed&status=pending&name=resize")) == 2
    by_reason = await rows("reason=TIMEOUT")  # any case, a substring
    assert sorted(d["failReason"] for d in by_reason) == ["SMTP timeout", "Timeout reading image"]
    assert await rows("reason=.*") == []  # text, not a pattern
    since = (now() - timedelta(days=1)).isoformat()
    recent = await rows(f"from={since.replace('+', '%2B')}")
    assert len(recent) == 4 and all(d["_id"] != old for d in recent)
    until = (now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    # A local time 120 minutes behind UTC (the page's script sends getTimezoneOffset()).
    older = await rows(f"to={until}&tz=-120")
    assert [d["_id"] for d in older] == [old]


async def test_keyset_paging_walks_every_job_once_both_ways(
    jobs: Any, web: httpx.AsyncClient
) -> None:
    await jobs.insert_many([doc(f"n{i % 3}") for i in range(130)])
    expected = [d["_id"] async for d in jobs.find({}, {"_id": 1}).sort("_id", -1)]
    seen: list[ObjectId] = []
    pages: list[str] = []
    url: str | None = "/jobs"
    while url is not None:
        text = (await web.get(url)).text
        pages.append(url)
        seen += [ObjectId(i) for i in ROW.findall(text)]
        older = re.search(r'<a href="([^"]+)" id="older">', text)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == expected
    assert len(pages) == 3
    assert "skip" not in "".join(pages)
    # Back from the last page: "newer" gives the page before it, same rows.
    last = (await web.get(pages[-1])).text
    newer = re.search(r'<a href="([^"]+)" id="newer">', last)
    assert newer is not None
    back = (await web.get(newer.group(1).replace("&amp;", "&"))).text
    assert [ObjectId(i) for i in ROW.findall(back)] == expected[50:100]


async def test_job_detail_shows_data_traceback_progress(jobs: Any, web: httpx.AsyncClient) -> None:
    result = await jobs.insert_one(
        failed(
            "mail",
            "SMTP said no",
            data={"to": "a@b.c", "n": 7},
            failTraceback='Traceback (most recent call last):\n  File "x.py"',
            progress={"done": 3, "of": 9},
        )
    )
    text = (await web.get(f"/jobs/{result.inserted_id}")).text
    assert "SMTP said no" in text
    assert "&#34;to&#34;: &#34;a@b.c&#34;" in text
    assert "Traceback (most recent call last)" in text
    assert "&#34;done&#34;: 3" in text
    assert re.search(r'id="attempts">3<', text)
    missing = await web.get(f"/jobs/{ObjectId()}")
    assert missing.status_code == 404
    assert (await web.get("/jobs/not-an-id")).status_code == 400


async def test_hostile_names_and_payloads_are_text(jobs: Any, web: httpx.AsyncClient) -> None:
    hostile = "<script>alert(1)</script>"
    result = await jobs.insert_one(
        failed(
            hostile,
            '<img src=x onerror="alert(2)">',
            data={"html": "</pre><script>alert(3)</script>", hostile: hostile},
            uniqueKey='"><svg onload=alert(4)>',
            repeatInterval="*/5 * * * *",
        )
    )
    pages = [
        "/",
        "/jobs",
        f"/jobs/{result.inserted_id}",
        "/schedules",
        f"/jobs?name={hostile}",
        f"/bulk?action=retry&name={hostile}",
    ]
    for path in pages:
        response = await web.get(path)
        assert response.status_code == 200, path
        text = response.text
        for raw in ("<script>alert", "<img src=x", "<svg onload", "</pre><script>"):
            assert raw not in text, (path, raw)
        assert "script-src 'self'" in response.headers["content-security-policy"]
    detail = (await web.get(f"/jobs/{result.inserted_id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail


async def test_schedules_page_next_runs_last_outcome_and_bad_zone(
    async_mongo_db: AsyncDatabase[dict[str, Any]], jobs: Any, web: httpx.AsyncClient
) -> None:
    engine = Monque(async_mongo_db)
    await engine.schedule("0 9 * * *", "report", {}, timezone="Europe/Berlin")
    await engine.schedule("*/5 * * * *", "sync", {})
    await jobs.update_one(
        {"name": "sync"},
        {
            "$set": {
                "failedAt": now(),
                "failReason": "remote down",
                "completedAt": now() - timedelta(hours=1),
            }
        },
    )
    await jobs.insert_one(doc("mars", repeatInterval="0 * * * *", timezone="Mars/Olympus"))
    await jobs.insert_one(doc("one-off"))
    text = (await web.get("/schedules")).text
    assert re.findall(r'class="job-name">([^<]+)</a>', text) == ["mars", "report", "sync"]
    rows = text.split("<tr>")[2:]
    assert "unknown timezone" in rows[0]
    assert rows[1].count("<time") == 3 and "Europe/Berlin" in rows[1]
    assert "not run yet" in rows[1]
    assert "failed" in rows[2] and "remote down" in rows[2]


async def test_fragment_requests_get_the_live_region_only(web: httpx.AsyncClient) -> None:
    full = await web.get("/jobs")
    part = await web.get("/jobs", headers={"X-Monque-Fragment": "1"})
    assert "<html" in full.text and "<html" not in part.text
    assert 'class="pager"' in part.text
    assert part.headers["cache-control"] == "no-store"


async def test_bad_query_input_is_a_400_page(web: httpx.AsyncClient) -> None:
    for query, words in (
        ("status=running", "unknown status 'running'"),
        ("before=zzz", "before must be a job id"),
        ("from=yesterday", "from must be a date and time"),
        ("to=2026-01-01T00:00&tz=abc", "tz must be whole minutes"),
        ("to=2026-01-01T00:00&tz=99999", "tz must be whole minutes"),
    ):
        response = await web.get(f"/jobs?{query}")
        assert response.status_code == 400, query
        assert words in response.text.replace("&#39;", "'"), query
    bulk = await web.get("/bulk?action=explode")
    assert bulk.status_code == 400


# -- actions ----------------------------------------------------------------------------


async def test_read_only_by_default(jobs: Any, web: httpx.AsyncClient) -> None:
    result = await jobs.insert_one(failed("mail"))
    page = (await web.get(f"/jobs/{result.inserted_id}")).text
    assert "act-retry" not in page and "read-only" in page
    assert 'id="bulk"' not in (await web.get("/jobs")).text
    token = web.cookies.get("monque_csrf")
    response = await web.post(f"/jobs/{result.inserted_id}/retry", data={"csrf": token or ""})
    assert response.status_code == 403
    assert "read-only" in response.text
    assert (await jobs.find_one({"_id": result.inserted_id}))["status"] == "failed"


async def test_actions_retry_cancel_reschedule_delete(jobs: Any, admin: httpx.AsyncClient) -> None:
    bad = (await jobs.insert_one(failed("mail"))).inserted_id
    waiting = (await jobs.insert_one(doc("mail", nextRunAt=now() + timedelta(hours=1)))).inserted_id
    later = (await jobs.insert_one(doc("mail"))).inserted_id

    response = await post(admin, f"/jobs/{bad}/retry")
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{bad}?done=retry"
    stored = await jobs.find_one({"_id": bad})
    assert stored["status"] == "pending" and stored["failCount"] == 0
    assert "Done: retry" in (await admin.get(response.headers["location"])).text
    spoof = await admin.get(f"/jobs/{bad}?done=Your+session+expired")
    assert "Done:" not in spoof.text and "session expired" not in spoof.text

    assert (await post(admin, f"/jobs/{waiting}/cancel")).status_code == 303
    assert (await jobs.find_one({"_id": waiting}))["status"] == "cancelled"

    # 09:30 local in a zone 60 minutes ahead of UTC (getTimezoneOffset() = -60): 08:30 UTC.
    response = await post(admin, f"/jobs/{later}/reschedule", run_at="2031-05-01T09:30", tz="-60")
    assert response.status_code == 303
    stored = await jobs.find_one({"_id": later})
    assert stored["nextRunAt"].replace(tzinfo=UTC) == datetime(2031, 5, 1, 8, 30, tzinfo=UTC)

    response = await post(admin, f"/jobs/{waiting}/delete")
    assert response.status_code == 303 and response.headers["location"] == "/jobs?done=deleted"
    assert await jobs.find_one({"_id": waiting}) is None


async def test_refused_actions_say_why_and_change_nothing(
    jobs: Any, admin: httpx.AsyncClient
) -> None:
    running = (await jobs.insert_one(doc("mail", "processing", claimedBy="w1"))).inserted_id
    done = (await jobs.insert_one(doc("mail", "completed"))).inserted_id
    response = await post(admin, f"/jobs/{running}/delete")
    assert response.status_code == 409 and "cannot delete" in response.text
    response = await post(admin, f"/jobs/{done}/retry")
    assert response.status_code == 409 and "it is completed" in response.text
    response = await post(admin, f"/jobs/{ObjectId()}/cancel")
    assert response.status_code == 404
    response = await post(admin, f"/jobs/{done}/explode")
    assert response.status_code == 404
    response = await post(admin, f"/jobs/{running}/reschedule", run_at="")
    assert response.status_code == 400
    assert (await jobs.find_one({"_id": running}))["status"] == "processing"
    assert (await jobs.find_one({"_id": done}))["status"] == "completed"


async def test_csrf_token_and_origin_are_checked(jobs: Any, admin: httpx.AsyncClient) -> None:
    job = (await jobs.insert_one(failed("mail"))).inserted_id
    cases = [
        ({"other": "1"}, {}, "CSRF"),
        ({"csrf": "x" * 43}, {}, "CSRF"),
        ({"csrf": csrf(admin)}, {"origin": "https://evil.example"}, "another origin"),
        ({"csrf": csrf(admin)}, {"sec-fetch-site": "cross-site"}, "cross-site"),
    ]
    for form, headers, words in cases:
        response = await admin.post(f"/jobs/{job}/retry", data=form, headers=headers)
        assert response.status_code == 403, (form, headers)
        assert words in response.text
    response = await admin.post(
        f"/jobs/{job}/retry",
        content=f'{{"csrf": "{csrf(admin)}"}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert (await jobs.find_one({"_id": job}))["status"] == "failed"
    # Same origin, right token: accepted.
    response = await admin.post(
        f"/jobs/{job}/retry", data={"csrf": csrf(admin)}, headers={"origin": "http://dash.test"}
    )
    assert response.status_code == 303


async def test_csrf_cookie_is_strict_and_http_only(web: httpx.AsyncClient) -> None:
    response = await web.get("/")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    again = await web.get("/")
    assert "set-cookie" not in again.headers  # the same token for the session


async def confirm(client: httpx.AsyncClient, query: str, **form: Any) -> httpx.Response:
    """Preview a bulk action, then confirm it with the preview's own form fields."""
    preview = (await client.get(f"/bulk?{query}")).text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', preview))
    statuses = re.findall(r'<input type="hidden" name="status" value="([^"]*)">', preview)
    data: dict[str, Any] = {**fields, **form}
    if statuses:
        data["status"] = statuses
    return await client.post("/bulk", data=data)


def preview_count(text: str) -> int:
    found = re.search(r'id="preview-count">(\d+)<', text)
    assert found is not None
    return int(found.group(1))


async def test_bulk_preview_counts_and_actions(jobs: Any, admin: httpx.AsyncClient) -> None:
    await jobs.insert_many(
        [failed("mail") for _ in range(4)]
        + [doc("mail", "cancelled") for _ in range(2)]
        + [failed("resize") for _ in range(3)]
        + [doc("mail") for _ in range(5)]
        + [doc("mail", "processing") for _ in range(1)]
    )
    assert preview_count((await admin.get("/bulk?action=retry&name=mail")).text) == 6
    assert preview_count((await admin.get("/bulk?action=retry&name=mail&status=failed")).text) == 4
    response = await confirm(admin, "action=retry&name=mail&status=failed")
    assert response.status_code == 303 and "done=retry%3A4" in response.headers["location"]
    assert await jobs.count_documents({"name": "mail", "status": "pending"}) == 9
    assert await jobs.count_documents({"name": "mail", "status": "cancelled"}) == 2

    assert preview_count((await admin.get("/bulk?action=delete&name=resize")).text) == 3
    await confirm(admin, "action=delete&name=resize")
    assert await jobs.count_documents({"name": "resize"}) == 0

    await confirm(admin, "action=reschedule&name=mail", run_at="2030-01-01T00:00:00+00:00")
    assert await jobs.count_documents({"nextRunAt": datetime(2030, 1, 1, tzinfo=UTC)}) == 9
    await confirm(admin, "action=cancel&name=mail")
    assert await jobs.count_documents({"status": "cancelled"}) == 11
    assert await jobs.count_documents({"status": "processing"}) == 1  # never touched

    # Every job at once needs the confirmation field the preview adds.
    everything = (await admin.get("/bulk?action=delete")).text
    assert 'name="confirm_all" value="yes"' in everything
    response = await post(admin, "/bulk", action="delete", upto=str(ObjectId()), expected="99")
    assert response.status_code == 400
    assert await jobs.count_documents({}) == 12
    # A POST that did not come from a preview is refused.
    response = await post(admin, "/bulk", action="delete", name="mail")
    assert response.status_code == 400 and "preview" in response.text


async def test_a_bulk_action_touches_no_more_than_its_preview_counted(
    jobs: Any, admin: httpx.AsyncClient
) -> None:
    """Review: 2 jobs previewed, 500 more arrived, the old form deleted 502."""
    await jobs.insert_many([failed("mail") for _ in range(2)])
    preview = (await admin.get("/bulk?action=delete&name=mail&status=failed")).text
    assert preview_count(preview) == 2
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', preview))
    await jobs.insert_many([failed("mail") for _ in range(50)])  # newer: past the preview's bound
    response = await admin.post("/bulk", data={**fields, "status": "failed"})
    assert response.status_code == 303 and "done=delete%3A2" in response.headers["location"]
    assert await jobs.count_documents({"name": "mail"}) == 50
    # Older jobs that moved into the selection since the preview: refused, nothing touched.
    preview = (await admin.get("/bulk?action=retry&name=mail&status=failed")).text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', preview))
    assert fields["expected"] == "50"
    await jobs.update_one({"status": "failed"}, {"$set": {"name": "other"}})
    await jobs.insert_one(
        {**failed("mail"), "_id": ObjectId.from_datetime(now() - timedelta(days=1))}
    )
    await jobs.insert_one(
        {**failed("mail"), "_id": ObjectId.from_datetime(now() - timedelta(days=2))}
    )
    response = await admin.post("/bulk", data={**fields, "status": "failed"})
    assert response.status_code == 409 and "preview again" in response.text
    assert await jobs.count_documents({"status": "pending"}) == 0


# -- access -----------------------------------------------------------------------------


async def test_basic_and_bearer_auth(async_mongo_db: AsyncDatabase[dict[str, Any]]) -> None:
    token = "t" * 24
    app = create_app(async_mongo_db, auth=Auth(username="ops", password="s3cret", token=token))
    async with client_for(app) as client:
        denied = await client.get("/")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
        assert denied.headers["x-frame-options"] == "DENY"
        for header in (
            "Basic " + base64.b64encode(b"ops:wrong").decode(),
            "Basic " + base64.b64encode(b"ops2:s3cret").decode(),
            "Basic !!!",
            "Bearer " + "u" * 24,
            "Token " + token,
        ):
            assert (await client.get("/", headers={"authorization": header})).status_code == 401
        good = "Basic " + base64.b64encode(b"ops:s3cret").decode()
        assert (await client.get("/", headers={"authorization": good})).status_code == 200
        bearer = {"authorization": f"Bearer {token}"}
        assert (await client.get("/jobs", headers=bearer)).status_code == 200
        assert (await client.get("/static/dashboard.js")).status_code == 401
    only_token = create_app(async_mongo_db, auth=Auth(token=token))
    async with client_for(only_token) as client:
        assert (await client.get("/")).headers["www-authenticate"].startswith("Bearer")


def test_auth_settings_are_checked() -> None:
    for kwargs in (
        {},
        {"username": "ops"},
        {"username": "ops", "password": ""},
        {"token": "short"},
    ):
        with pytest.raises(ValueError):
            Auth(**kwargs)


async def test_mounted_under_a_path_in_another_app(
    async_mongo_db: AsyncDatabase[dict[str, Any]], jobs: Any
) -> None:
    job = (await jobs.insert_one(failed("mail"))).inserted_id
    host = Starlette(
        routes=[Mount("/admin/queue", app=create_app(async_mongo_db, allow_actions=True))]
    )
    async with client_for(host) as client:
        page = await client.get("/admin/queue/jobs")
        assert page.status_code == 200
        assert f'href="/admin/queue/jobs/{job}"' in page.text
        assert 'src="/admin/queue/static/dashboard.js"' in page.text
        assert "path=/admin/queue" in page.headers["set-cookie"].lower()
        assert (await client.get("/admin/queue/static/dashboard.css")).status_code == 200
        response = await client.post(
            f"/admin/queue/jobs/{job}/retry", data={"csrf": client.cookies["monque_csrf"]}
        )
        assert response.headers["location"] == f"/admin/queue/jobs/{job}?done=retry"


async def test_indexes_are_created_on_the_first_request_unless_disabled(
    async_mongo_db: AsyncDatabase[dict[str, Any]], jobs: Any
) -> None:
    wanted = {m.document["name"] for m in DASHBOARD_INDEXES}
    async with client_for(create_app(async_mongo_db, create_indexes=False)) as client:
        for path in ("/jobs", "/", "/schedules", "/jobs?status=failed&name=x"):
            assert (await client.get(path)).status_code == 200, path
        assert not wanted & set(await jobs.index_information())
    # An earlier definition of one of its own indexes is replaced, not a conflict.
    await jobs.create_index([("name", 1)], name="monque_dash_schedules")
    async with client_for(create_app(async_mongo_db)) as client:
        assert (await client.get("/jobs")).status_code == 200
    info = await jobs.index_information()
    assert wanted <= set(info)
    assert info["monque_dash_schedules"]["key"] == [("name", 1), ("_id", 1)]


async def test_a_database_outage_is_a_503_page(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    from pymongo import AsyncMongoClient

    dead: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200", tz_aware=True
    )
    try:
        async with client_for(create_app(dead["x"])) as client:
            response = await client.get("/")
            assert response.status_code == 503
            assert "MongoDB did not answer" in response.text
    finally:
        await dead.close()


# -- live updates -------------------------------------------------------------------------


@pytest.mark.parametrize("sync_handle", [False, True], ids=["async", "sync"])
async def test_live_events_follow_the_change_stream(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
    sync_handle: bool,
) -> None:
    from unittest import mock

    from monque.dashboard import live
    from monque.dashboard.live import events
    from monque.storage.calls import JobCollection

    handle: Any = mongo_db if sync_handle else async_mongo_db
    seen: list[bool] = []
    real_open = live._open

    async def slow_open(jobs: JobCollection) -> Any:
        await asyncio.sleep(0.3)  # a slow server: the stream opens well after the request
        return await real_open(jobs)

    stream = events(
        JobCollection(handle, "monque_jobs"),
        poll_interval=5,
        min_gap=0.0,
        on_change=lambda: seen.append(True),
    )
    try:
        with mock.patch.object(live, "_open", slow_open):
            # "ready" comes once the stream is open, so a write made right after it is seen.
            # (The first line used to come before the stream was opened: such a write was
            # missed, and the page, showing "live", waited for the next one.)
            assert await anext(stream) == "retry: 5000\nid: ready\nevent: ready\ndata: stream\n\n"
            nxt = asyncio.ensure_future(anext(stream))
            await async_mongo_db["monque_jobs"].insert_one(doc("mail"))
            assert await asyncio.wait_for(nxt, 10) == "data: change\n\n"
        assert seen
    finally:
        await stream.aclose()


@pytest.mark.parametrize("resumed", [False, True])
async def test_a_resumed_live_stream_marks_cached_figures_stale(
    async_mongo_db: AsyncDatabase[dict[str, Any]], resumed: bool
) -> None:
    """A page reconnecting (Last-Event-ID) or resuming after a pause reloads on ``ready``:
    writes made while it was away went unseen, so figures cached meanwhile must not serve."""
    from monque.dashboard.live import events
    from monque.storage.calls import JobCollection

    changes: list[str] = []
    stream = events(
        JobCollection(async_mongo_db, "monque_jobs"),
        poll_interval=5,
        on_change=lambda: changes.append("change"),
        resumed=resumed,
    )
    try:
        assert (await anext(stream)).endswith("event: ready\ndata: stream\n\n")
        assert changes == (["change"] if resumed else [])
    finally:
        await stream.aclose()


async def _first_live_block(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """GET ``path`` on the ASGI app until its first body chunk, then disconnect (httpx's
    ASGITransport waits for the end of a response, and this one never ends)."""
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = asyncio.Event()
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"dash.test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("dash.test", 80),
    }

    async def receive() -> dict[str, Any]:
        if not gone.is_set():
            gone.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays until the task is cancelled
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await sent.put(message)

    task = asyncio.create_task(app(scope, receive, send))
    try:
        while True:
            message = await asyncio.wait_for(sent.get(), 10)
            if message["type"] == "http.response.body" and message.get("body"):
                body: bytes = message["body"]
                return body
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("path", "headers", "stale"),
    [
        ("/live", [], False),
        ("/live", [(b"last-event-id", b"ready")], True),
        ("/live?resumed=1", [], True),
    ],
    ids=["first", "retry", "unpaused"],
)
async def test_the_live_route_knows_a_resumed_page(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
    path: str,
    headers: list[tuple[bytes, bytes]],
    stale: bool,
) -> None:
    app = create_app(async_mongo_db)
    dash = app.state.dashboard
    before = dash._changed_at
    block = await _first_live_block(app, path, headers)
    assert block.endswith(b"event: ready\ndata: stream\n\n")
    assert (dash._changed_at > before) is stale


async def test_live_events_poll_without_change_streams(
    async_mongo_db: AsyncDatabase[dict[str, Any]],
) -> None:
    from unittest import mock

    from pymongo.errors import OperationFailure

    from monque.dashboard import live
    from monque.storage.calls import JobCollection

    # A standalone mongod refuses $changeStream with code 40573 (no failpoint fakes that).
    refuse = mock.AsyncMock(side_effect=OperationFailure("not a replica set", 40573))
    with mock.patch.object(live, "_open", refuse):
        stream = live.events(JobCollection(async_mongo_db, "monque_jobs"), poll_interval=0.05)
        try:
            assert await anext(stream) == "retry: 50\nid: ready\nevent: ready\ndata: poll\n\n"
            assert await asyncio.wait_for(anext(stream), 5) == "data: tick\n\n"
            assert await asyncio.wait_for(anext(stream), 5) == "data: tick\n\n"
        finally:
            await stream.aclose()


# -- pure parts ---------------------------------------------------------------------------


def test_filters_map_onto_the_dashboard_indexes() -> None:
    assert JobFilter().query() == {}
    assert JobFilter(statuses=("failed",)).query() == {"status": {"$in": ["failed"]}}
    # A name lists every status, so mongod merges the (name, status, _id) ranges in order.
    assert JobFilter(name="m").query() == {"name": "m", "status": {"$in": list(q.STATUSES)}}
    t = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    ids = JobFilter(created_from=t, created_to=t + timedelta(hours=1)).query()["_id"]
    assert ids["$gte"].generation_time == datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    assert ids["$lt"].generation_time == datetime(2026, 1, 1, 13, 0, 1, tzinfo=UTC)
    assert JobFilter(reason="a.b(").query()["failReason"] == {"$regex": r"a\.b\(", "$options": "i"}


def test_query_strings_become_filters() -> None:
    flt = job_filter({"name": ["mail "], "status": ["failed", "failed", ""], "reason": [""]})
    assert flt == JobFilter(name="mail ", statuses=("failed",))  # a name keeps its spaces
    assert job_filter({"name": [""]}) == JobFilter()  # an empty field is no filter
    for bad in ("1900-01-01T00:00", "2200-01-01T00:00", "9999-12-31T23:59:59-05:00"):
        with pytest.raises(BadRequest, match=r"1970 and 2105|out of range"):
            _time(bad, None, "from")
    with pytest.raises(BadRequest, match="out of range"):
        _time("0001-01-01T00:00", "-600", "from")
    assert _time("2026-03-01T10:00", "-60", "x") == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert _time("2026-03-01T10:00Z", "-60", "x") == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert _time("2026-03-01T10:00", None, "x") == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_chart_scales_bars_to_the_busiest_minute() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    chart = _chart([(t, 0, 0), (t + timedelta(minutes=1), 6, 2), (t + timedelta(minutes=2), 2, 0)])
    assert chart["top"] == 8 and chart["completed"] == 8 and chart["failed"] == 2
    busiest = chart["bars"][1]
    assert busiest["done_h"] + busiest["failed_h"] == chart["height"]
    assert busiest["failed_y"] == 0
    assert chart["bars"][0]["done_h"] == 0
    assert busiest["label"] == "00:01 UTC: 6 completed, 2 failed"


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_dashboard_command_refuses_bad_settings_in_one_line(
    runner: CliRunner, mongodb_uri: str
) -> None:
    result = runner.invoke(
        cli, ["dashboard", "--uri", mongodb_uri, "--db", "x", "--basic-auth", "nocolon"]
    )
    assert result.exit_code == 2 and "USER:PASSWORD" in result.output
    result = runner.invoke(
        cli, ["dashboard", "--uri", mongodb_uri, "--db", "x", "--token", "short"]
    )
    assert result.exit_code == 1 and "at least 16 characters" in result.output
    result = runner.invoke(
        cli, ["dashboard", "--uri", "mongodb://127.0.0.1:1/x", "--timeout", "0.3"]
    )
    assert result.exit_code == 1 and "cannot reach MongoDB" in result.output
    assert "Traceback" not in result.output


def test_dashboard_command_serves_until_sigterm(mongodb_uri: str, mongo_db_name: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from monque.testing.server import free_port

    port = free_port()
    env = {**os.environ, "MONQUE_DASHBOARD_BASIC_AUTH": "ops:pw"}
    args = ["dashboard", "--uri", mongodb_uri, "--db", mongo_db_name, "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monque.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    auth = "Basic " + base64.b64encode(b"ops:pw").decode()
    try:
        deadline = time.monotonic() + 20
        body = None
        while body is None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/jobs")
            request.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = response.read().decode()
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not start in 20 s"
                time.sleep(0.1)  # polling a port until a deadline
        assert "read-only" in body
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert denied.value.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    # uvicorn shuts down, then re-raises the signal it caught (so the exit says SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out
    assert f"dashboard at http://127.0.0.1:{port}/ (read-only)" in out


async def test_overview_totals_count_every_name_when_not_all_are_shown(
    jobs: Any, web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(q, "MAX_NAMES", 2)
    monkeypatch.setattr(q, "MAX_RUNNING", 1)
    await jobs.insert_many(
        [
            doc("a"),
            doc("b", "failed"),
            doc("c", "processing", claimedBy="w1"),
            doc("d", "processing", claimedBy="w1"),
        ]
    )
    page = (await web.get("/")).text
    totals = {s: n for n, s in re.findall(r'<span class="count">(\d+)</span> (\w+)</a>', page)}
    assert totals["pending"] == "1" and totals["failed"] == "1" and totals["processing"] == "2"
    assert re.findall(r'class="job-name">([^<]+)</a>', page) == ["a", "b"]
    assert "and 2 more names" in page
    assert "Showing the newest 1 of 2 running jobs" in page


async def test_concurrent_first_requests_build_the_indexes_once(
    async_mongo_db: AsyncDatabase[dict[str, Any]], jobs: Any
) -> None:
    app = create_app(async_mongo_db)
    async with client_for(app) as client:
        pages = await asyncio.gather(*(client.get(p) for p in ("/", "/jobs", "/schedules") * 3))
    assert {r.status_code for r in pages} == {200}
    assert {m.document["name"] for m in DASHBOARD_INDEXES} <= app.state.dashboard.indexes


# -- found by review ------------------------------------------------------------------------


async def test_malformed_documents_are_shown_not_a_500(jobs: Any, admin: httpx.AsyncClient) -> None:
    good = (await jobs.insert_one(doc("mail"))).inserted_id
    bad = [
        {"name": "no-due", "status": "processing", "claimedBy": "w9"},  # no nextRunAt
        {**doc("weird"), "status": "exploded"},
        {**doc("floaty"), "priority": 1.5},
        {**doc("cron"), "repeatInterval": 5},
    ]
    ids = (await jobs.insert_many(bad)).inserted_ids
    for path in ("/", "/jobs", "/schedules", "/jobs?name=weird", *(f"/jobs/{i}" for i in ids)):
        response = await admin.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    listing = (await admin.get("/jobs")).text
    assert set(ROW.findall(listing)) == {str(good), *map(str, ids)}
    assert "not a valid job" in listing and "invalid status" in listing
    detail = (await admin.get(f"/jobs/{ids[1]}")).text
    assert "Not a valid job" in detail and "&#34;exploded&#34;" in detail
    assert "cron" in (await admin.get("/schedules")).text
    # An action on one writes and reports success (it used to write, then answer 500).
    response = await post(admin, f"/jobs/{ids[1]}/delete")
    assert response.status_code == 303
    assert await jobs.find_one({"_id": ids[1]}) is None
    await jobs.update_one({"_id": ids[2]}, {"$set": {"status": "failed"}})
    assert (await post(admin, f"/jobs/{ids[2]}/retry")).status_code == 303
    assert (await jobs.find_one({"_id": ids[2]}))["status"] == "pending"


async def test_names_keep_their_spaces(jobs: Any, admin: httpx.AsyncClient) -> None:
    await jobs.insert_many(
        [doc("emails") for _ in range(3)] + [failed("emails ") for _ in range(2)]
    )
    listed = ROW.findall((await admin.get("/jobs?name=emails%20")).text)
    assert len(listed) == 2
    await confirm(admin, "action=delete&name=emails%20")
    assert await jobs.count_documents({"name": "emails"}) == 3
    assert await jobs.count_documents({"name": "emails "}) == 0


async def test_out_of_range_times_are_a_400_page(web: httpx.AsyncClient) -> None:
    for query in ("from=1900-01-01T00:00", "to=2200-01-01T00:00", "to=2106-02-07T06:28:16Z"):
        for path in ("/jobs", "/bulk?action=retry&"):
            sep = "?" if path == "/jobs" else ""
            response = await web.get(f"{path}{sep}{query}")
            assert response.status_code == 400, (path, query)


async def test_the_list_never_reads_payloads(jobs: Any) -> None:
    from monque.dashboard.queries import list_jobs
    from monque.storage.calls import JobCollection

    await jobs.insert_one(doc("big", data={"blob": "x" * 1_000_000}, progress={"p": 1}))
    page = await JobCollection(jobs.database, "monque_jobs").run(list_jobs(JobFilter()))
    (job,) = page.jobs
    assert job.name == "big" and getattr(job, "data", None) is None


async def test_a_user_who_may_not_create_indexes_still_gets_pages(
    async_mongo_db: AsyncDatabase[dict[str, Any]], mongo_db: Database[dict[str, Any]]
) -> None:
    from monque.testing.failpoints import fail_command

    with fail_command(mongo_db.client, ["createIndexes"], error_code=13, times=5):
        async with client_for(create_app(async_mongo_db)) as client:
            assert (await client.get("/jobs")).status_code == 200
            assert (await client.get("/")).status_code == 200


async def test_origins_behind_a_tls_proxy_and_opaque_origins(
    jobs: Any, admin: httpx.AsyncClient
) -> None:
    job = (await jobs.insert_one(failed("mail"))).inserted_id
    # The browser saw https, the app sees http (TLS ends at the proxy): same host, accepted.
    ok = await admin.post(
        f"/jobs/{job}/retry", data={"csrf": csrf(admin)}, headers={"origin": "https://dash.test"}
    )
    assert ok.status_code == 303
    await jobs.update_one({"_id": job}, {"$set": {"status": "failed"}})
    opaque = await admin.post(
        f"/jobs/{job}/retry", data={"csrf": csrf(admin)}, headers={"origin": "null"}
    )
    assert opaque.status_code == 403
    same = await admin.post(
        f"/jobs/{job}/retry",
        data={"csrf": csrf(admin)},
        headers={"origin": "https://other.example", "sec-fetch-site": "same-origin"},
    )
    assert same.status_code == 303  # the browser's own Sec-Fetch-Site wins


async def test_the_overview_is_shared_until_a_change_or_two_seconds(
    async_mongo_db: AsyncDatabase[dict[str, Any]], jobs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monque.dashboard import app as dashboard_app

    app = create_app(async_mongo_db)
    pending = re.compile(r'<span class="count">(\d+)</span> pending')
    async with client_for(app) as web:
        await jobs.insert_one(doc("mail"))
        assert pending.findall((await web.get("/")).text) == ["1"]
        await jobs.insert_one(doc("mail"))
        assert pending.findall((await web.get("/")).text) == ["1"]  # shared figures
        # A live stream saw a write: figures begun before it are stale (review: a second write
        # within the cache's age left the live overview wrong for good).
        app.state.dashboard.note_change()
        assert pending.findall((await web.get("/")).text) == ["2"]
        await jobs.insert_one(doc("mail"))
        monkeypatch.setattr(dashboard_app, "OVERVIEW_MAX_AGE", 0.0)
        assert pending.findall((await web.get("/")).text) == ["3"]


def test_dashboard_command_builds_the_app_it_serves(
    runner: CliRunner, mongodb_uri: str, mongo_db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``monque dashboard`` hands uvicorn (served for real in the SIGTERM test above)."""
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    args = ["dashboard", "--uri", mongodb_uri, "--db", mongo_db_name, "--host", "0.0.0.0"]
    result = runner.invoke(cli, [*args, "--allow-actions", "--port", "9999"])
    assert result.exit_code == 0, result.output
    assert "without --basic-auth or --token" in result.output  # bound beyond loopback
    assert served["host"] == "0.0.0.0" and served["port"] == 9999
    dash = served["app"].state.dashboard
    assert dash.allow_actions and dash.engine.database.name == mongo_db_name
    served.clear()
    result = runner.invoke(cli, [*args, "--token", "t" * 20, "--basic-auth", "ops:pw"])
    assert result.exit_code == 0 and "without --basic-auth" not in result.output
    assert not served["app"].state.dashboard.allow_actions
