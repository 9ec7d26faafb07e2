"""The dashboard in a real headless Chromium: pages, filters and paging, actions, bulk actions,
hostile job content, live updates and local times, served by uvicorn on a real port."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bson import ObjectId
from pymongo.database import Database

from monque import Monque
from monque.testing.server import free_port
from tests.helpers import wait_until

try:
    import uvicorn

    from monque.dashboard import create_app
except ImportError:
    pytest.skip("no dashboard extra: pip install 'monque-py[dashboard]'", allow_module_level=True)

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    pytest.skip("no selenium: pip install selenium", allow_module_level=True)

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no chromium: apt-get install chromium chromium-driver (.ci/run does)",
        allow_module_level=True,
    )

# The viewer's zone: half an hour off any whole-hour zone, and without daylight saving time, so
# a time shown in UTC (or converted with the wrong offset) never looks right by accident.
VIEWER_ZONE = "Asia/Kolkata"
VIEWER = ZoneInfo(VIEWER_ZONE)

Doc = dict[str, Any]


# -- the browser and the server ------------------------------------------------------------


def chrome(zone: str) -> WebDriver:
    """A headless Chromium whose clock is in ``zone``, in US English."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": zone})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One browser for the module, in ``VIEWER_ZONE``."""
    driver = chrome(VIEWER_ZONE)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Site:
    """A dashboard served on a real port, the browser looking at it, and its database."""

    driver: WebDriver
    db: Database[Doc]
    base: str

    def open(self, path: str, *, error: bool = False) -> None:
        self.driver.get(self.base + path)
        self.ready()
        page = self.driver.execute_script("return document.body.dataset.page || null")
        if not error:
            problem = self.texts("#error-message")
            assert page != "error", f"{path}: {problem}"

    def ready(self) -> None:
        # ``get`` waits for the load event, which comes after the deferred script's
        # DOMContentLoaded work (local times, time-zone fields); after a click, wait for it.
        wait(self.driver).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        # Every page runs under its own CSP without a violation or a script error.
        problems = [
            m for m in console(self.driver) if "Content Security Policy" in m or "Uncaught" in m
        ]
        assert problems == [], problems

    def submit(self, element: WebElement) -> None:
        """Click ``element`` and wait for the page it leads to."""
        page = self.mark()
        element.click()
        self.left(page)

    def mark(self) -> str:
        """Tag the current document, for ``left``."""
        token = uuid.uuid4().hex
        self.driver.execute_script("window.__testPage = arguments[0]", token)
        return token

    def left(self, token: str) -> None:
        """Wait until the document tagged ``token`` is replaced by a loaded one."""

        def moved(driver: WebDriver) -> bool:
            # Mid-navigation the driver may answer with any error: not there yet.
            try:
                return bool(
                    driver.execute_script(
                        "return window.__testPage !== arguments[0]"
                        " && document.readyState === 'complete'",
                        token,
                    )
                )
            except WebDriverException:
                return False

        wait(self.driver).until(moved)
        self.ready()

    def click(self, css: str) -> None:
        self.submit(self.driver.find_element(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        """The rendered text of the first element matching ``css`` (waits for it)."""
        value: str = wait(self.driver).until(
            lambda d: d.find_element(By.CSS_SELECTOR, css).text or False
        )
        return value

    def texts(self, css: str) -> list[str]:
        found: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
        )
        return found

    def ids(self) -> list[str]:
        """The job ids of the listed rows, top to bottom."""
        found: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll('tr[data-id]')].map(r => r.dataset.id)"
        )
        return found

    def post_without_token(self, path: str) -> Any:
        """POST to ``path`` from the page's own script with a made-up CSRF token; the status
        (or the fetch error)."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const body = new URLSearchParams({csrf: 'x'.repeat(40)});"
            "fetch(arguments[0], {method: 'POST', body})"
            ".then(r => done(r.status), e => done(String(e)));",
            path,
        )

    def until_live(self) -> None:
        """Wait until the page's live stream is open (its ``ready`` event)."""
        wait(self.driver).until(lambda d: d.find_element(By.ID, "live-state").text == "live")

    def exists(self, css: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def job(self, job_id: ObjectId) -> Doc:
        doc = self.db.monque_jobs.find_one({"_id": job_id})
        assert doc is not None, f"job {job_id} is gone"
        return doc


def wait(driver: WebDriver, timeout: float = 10.0) -> WebDriverWait[WebDriver]:
    # Live updates swap the page's #live region: an element found a moment ago may be gone.
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    )


Serve = Callable[..., Site]


def pending_count(driver: WebDriver) -> str:
    """The overview's pending total as shown."""
    return str(driver.find_element(By.CSS_SELECTOR, "a.total[data-status=pending] .count").text)


@pytest.fixture
def serve(browser: WebDriver, mongo_db: Database[Doc]) -> Iterator[Serve]:
    """``serve(**create_app options)``: the dashboard over the test's database (a sync
    pymongo handle: an async client would be bound to the test's loop, not the server's)."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**options: Any) -> Site:
        app = create_app(mongo_db, **options)
        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,  # an open event stream must not hold the stop
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"dashboard-{port}", daemon=True)
        thread.start()
        running.append((server, thread))
        wait_until(lambda: server.started or not thread.is_alive(), timeout=15)
        assert server.started, "the dashboard server did not start"
        console(browser)  # drop what earlier tests left in the log
        return Site(browser, mongo_db, f"http://127.0.0.1:{port}")

    yield start
    # Leave the page first: that closes its event stream, so the server stops at once.
    dismiss_dialogs(browser)
    browser.get("about:blank")
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(15)
        assert not thread.is_alive(), "the dashboard server did not stop"


def console(driver: WebDriver) -> list[str]:
    """The browser console's messages since the last call."""
    entries = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [str(entry.get("message", "")) for entry in entries]


def dismiss_dialogs(driver: WebDriver) -> None:
    with contextlib.suppress(NoAlertPresentException):
        driver.switch_to.alert.dismiss()


# -- seeding --------------------------------------------------------------------------------


def now() -> datetime:
    at = datetime.now(timezone.utc)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def insert_job(
    db: Database[Doc],
    name: str,
    status: str,
    data: Any = None,
    *,
    job_id: ObjectId | None = None,
    **fields: Any,
) -> ObjectId:
    """A job document written directly (failed, completed, or a name the engine refuses)."""
    at = now()
    doc: Doc = {
        "_id": job_id or ObjectId(),
        "name": name,
        "data": data,
        "status": status,
        "nextRunAt": at,
        "failCount": 0,
        "priority": 0,
        "createdAt": at,
        "updatedAt": at,
    }
    if status == "failed":
        doc.update(failCount=3, failReason="boom", failedAt=at)
    if status == "completed":
        doc["completedAt"] = at
    doc.update(fields)
    db.monque_jobs.insert_one(doc)
    return ObjectId(doc["_id"])


def id_at(when: datetime) -> ObjectId:
    """A fresh id whose creation time (what the jobs page filters on) is ``when``."""
    stamp = int(when.timestamp()).to_bytes(4, "big")
    return ObjectId(stamp + ObjectId().binary[4:])


def viewer_time(value: datetime) -> str:
    """``Date.toLocaleString()`` in en-US, in the viewer's zone."""
    local = value.astimezone(VIEWER)
    hour = local.hour % 12 or 12
    half = "AM" if local.hour < 12 else "PM"
    return (
        f"{local.month}/{local.day}/{local.year}, "
        f"{hour}:{local.minute:02d}:{local.second:02d} {half}"
    )


def plain(text: str) -> str:
    # ICU puts a narrow no-break space before AM/PM.
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def from_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- tests ----------------------------------------------------------------------------------


def test_pages_show_counts_jobs_schedules_and_job_data(
    serve: Serve, mongo_db: Database[Doc]
) -> None:
    monque = Monque(mongo_db)
    pending = [monque.enqueue_sync("email", {"to": f"user{i}@example.com"}) for i in range(3)]
    failed = [
        insert_job(mongo_db, "email", "failed", {"to": "x@example.com"}),
        insert_job(mongo_db, "report", "failed"),
        insert_job(mongo_db, "report", "failed"),
    ]
    done = insert_job(mongo_db, "report", "completed")
    nightly = monque.schedule_sync(
        "0 3 * * *", "nightly-report", {"kind": "full"}, timezone="Europe/Paris"
    )
    site = serve()

    site.open("/")
    totals = {
        s: int(site.text(f"a.total[data-status={s}] .count"))
        for s in ("pending", "processing", "completed", "failed", "cancelled")
    }
    assert totals == {"pending": 4, "processing": 0, "completed": 1, "failed": 3, "cancelled": 0}
    head = site.texts("#names thead th")
    assert head == ["Name", "pending", "processing", "completed", "failed", "cancelled"]
    table = {
        row[0]: [int(n) for n in row[1:]]
        for row in site.driver.execute_script(
            "return [...document.querySelectorAll('#names tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent.trim()))"
        )
    }
    assert table == {
        "email": [3, 0, 0, 1, 0],
        "nightly-report": [1, 0, 0, 0, 0],
        "report": [0, 0, 1, 2, 0],
    }
    legend = site.text(".legend")
    assert "1 completed" in legend and "3 failed attempts" in legend
    assert "No live workers" in site.text("main")

    site.open("/jobs")
    expected = sorted([*(j.id for j in pending), *failed, done, nightly.id], reverse=True)
    assert site.ids() == [str(i) for i in expected]

    site.open("/schedules")
    cells = site.driver.find_elements(By.CSS_SELECTOR, "#schedules tbody tr td")
    assert [c.text for c in cells[:5]] == [
        "nightly-report",
        nightly.unique_key,  # the key a schedule gets from its name
        "0 3 * * *",
        "Europe/Paris",
        "pending",
    ]
    assert cells[6].text == "not run yet"
    runs = [
        from_iso(str(t.get_attribute("datetime")))
        for t in cells[5].find_elements(By.TAG_NAME, "time")
    ]
    assert len(runs) == 3
    assert runs[0] > datetime.now(timezone.utc)
    paris = [r.astimezone(ZoneInfo("Europe/Paris")) for r in runs]
    assert all((p.hour, p.minute, p.second) == (3, 0, 0) for p in paris), paris
    assert [(b.date() - a.date()).days for a, b in itertools.pairwise(paris)] == [1, 1]

    site.open("/jobs")
    site.click(f"tr[data-id='{pending[1].id}'] a")
    assert site.driver.current_url == f"{site.base}/jobs/{pending[1].id}"
    assert site.text("#job-name") == "email"
    assert site.text("#job-status") == "pending"
    assert json.loads(site.text("#data")) == {"to": "user1@example.com"}
    assert site.text("#attempts") == "0"

    site.open(f"/jobs/{failed[0]}")
    assert site.text("#job-status") == "failed"
    assert site.text("#fail-reason") == "boom"
    assert site.text("#attempts") == "3"

    site.open(f"/jobs/{ObjectId()}", error=True)
    assert "no job" in site.text("#error-message")


def test_filters_and_paging_show_each_job_once(serve: Serve, mongo_db: Database[Doc]) -> None:
    monque = Monque(mongo_db)
    made = monque.enqueue_many_sync(
        [("alpha" if i % 2 == 0 else "beta", {"i": i}) for i in range(120)]
    )
    by_name = {j.id: j.name for j in made}
    alphas = [j.id for j in made if j.name == "alpha"]
    # A third of the alphas failed: the status filter has something to leave out.
    failed_alphas = set(alphas[::3])
    mongo_db.monque_jobs.update_many(
        {"_id": {"$in": list(failed_alphas)}},
        {"$set": {"status": "failed", "failReason": "boom", "failedAt": now()}},
    )
    site = serve()

    site.open("/jobs")
    name = site.driver.find_element(By.ID, "f-name")
    name.clear()
    name.send_keys("alpha")
    site.driver.find_element(By.CSS_SELECTOR, "input[name=status][value=pending]").click()
    site.click("#apply")
    assert "name=alpha" in site.driver.current_url
    assert "status=pending" in site.driver.current_url
    wanted = sorted((i for i in alphas if i not in failed_alphas), reverse=True)
    assert site.ids() == [str(i) for i in wanted]
    assert len(wanted) == 40
    assert not site.exists("#older") and not site.exists("#newer")
    # The form shows the filter it applied.
    assert site.driver.find_element(By.ID, "f-name").get_attribute("value") == "alpha"
    checked = site.driver.find_elements(By.CSS_SELECTOR, "input[name=status]:checked")
    assert [c.get_attribute("value") for c in checked] == ["pending"]
    assert set(site.texts("td.job-name")) == {"alpha"}

    # Every job, newest first, page by page: 50, 50, 20.
    site.open("/jobs")
    pages = [site.ids()]
    while site.exists("#older"):
        site.click("#older")
        pages.append(site.ids())
    assert [len(p) for p in pages] == [50, 50, 20]
    seen = [i for page in pages for i in page]
    assert seen == [str(i) for i in sorted(by_name, reverse=True)]
    assert len(set(seen)) == 120
    # ... and back again through the newer links.
    back = [site.ids()]
    while site.exists("#newer"):
        site.click("#newer")
        back.append(site.ids())
    assert back == pages[::-1]
    assert not site.exists("#newest")

    # The pager keeps the filter: 60 betas are two pages, all betas.
    site.open("/jobs?name=beta")
    first = site.ids()
    site.click("#older")
    assert "name=beta" in site.driver.current_url
    second = site.ids()
    assert [len(first), len(second)] == [50, 10]
    assert {by_name[ObjectId(i)] for i in first + second} == {"beta"}
    site.click("#newest")
    assert site.ids() == first


def test_actions_change_the_job_and_the_page(serve: Serve, mongo_db: Database[Doc]) -> None:
    monque = Monque(mongo_db)
    failed = insert_job(mongo_db, "sync", "failed", {"n": 1})
    waiting = monque.enqueue_sync("sync", {"n": 2}).id
    doomed = monque.enqueue_sync("sync", {"n": 3}).id

    readonly = serve()
    readonly.open(f"/jobs/{failed}")
    assert readonly.text(".mode") == "read-only"
    assert readonly.text("#job-status") == "failed"
    assert not readonly.exists("[id^=act-]")
    readonly.open("/jobs")
    assert not readonly.exists("#bulk")
    # Even a hand-made POST is refused, and changes nothing.
    status = readonly.post_without_token(f"/jobs/{failed}/retry")
    assert status == 403
    assert readonly.job(failed)["status"] == "failed"

    site = serve(allow_actions=True)
    site.open(f"/jobs/{failed}")
    assert site.text(".mode") == "actions enabled"
    assert not site.exists("#act-cancel")  # nothing to cancel on a failed job
    site.click("#act-retry")
    assert site.driver.current_url == f"{site.base}/jobs/{failed}?done=retry"
    assert site.text("#done") == "Done: retry"
    assert site.text("#job-status") == "pending"
    assert site.text("#attempts") == "0"
    assert site.job(failed)["status"] == "pending"

    site.open(f"/jobs/{waiting}")
    assert not site.exists("#act-retry")
    site.click("#act-cancel")
    assert site.text("#job-status") == "cancelled"
    assert site.job(waiting)["status"] == "cancelled"
    assert site.exists("#act-retry")  # a cancelled job can run again

    # A POST without the page's token is refused (CSRF), though actions are on.
    status = site.post_without_token(f"/jobs/{doomed}/cancel")
    assert status == 403
    assert site.job(doomed)["status"] == "pending"

    # Delete asks first: dismissed, nothing happens; accepted, the job is gone.
    site.open(f"/jobs/{doomed}")
    site.driver.find_element(By.ID, "act-delete").click()
    dialog = wait(site.driver).until(ec.alert_is_present())
    assert dialog.text == "Delete this job for good?"
    dialog.dismiss()
    assert site.job(doomed)["status"] == "pending"
    assert site.driver.current_url == f"{site.base}/jobs/{doomed}"
    page = site.mark()
    site.driver.find_element(By.ID, "act-delete").click()
    wait(site.driver).until(ec.alert_is_present()).accept()
    site.left(page)
    assert site.driver.current_url == f"{site.base}/jobs?done=deleted"
    assert site.text("#done") == "Done: deleted"
    assert mongo_db.monque_jobs.find_one({"_id": doomed}) is None
    assert str(doomed) not in site.ids()


def test_bulk_retry_previews_then_retries_the_filtered_jobs(
    serve: Serve, mongo_db: Database[Doc]
) -> None:
    monque = Monque(mongo_db)
    failed = [insert_job(mongo_db, "import", "failed", {"n": i}) for i in range(5)]
    other_failed = insert_job(mongo_db, "export", "failed")
    pending = monque.enqueue_sync("import", {"n": 9}).id
    done = insert_job(mongo_db, "import", "completed")
    site = serve(allow_actions=True)

    site.open("/jobs")
    name = site.driver.find_element(By.ID, "f-name")
    name.send_keys("import")
    site.driver.find_element(By.CSS_SELECTOR, "input[name=status][value=failed]").click()
    site.click("#apply")
    assert site.ids() == [str(i) for i in sorted(failed, reverse=True)]

    Select(site.driver.find_element(By.ID, "bulk-action")).select_by_value("retry")
    site.click("#bulk-preview")
    assert "/bulk?" in site.driver.current_url
    assert site.text("#preview-count") == "5"
    assert site.texts(".criteria li") == ["name is import", "status is failed"]
    assert site.text("#bulk-do") == "Retry 5 jobs"
    assert all(site.job(i)["status"] == "failed" for i in failed)  # a preview changes nothing

    site.click("#bulk-do")
    assert site.text("#done") == "Done: retry:5"
    assert site.exists("#no-jobs")  # the same filter: no failed imports left
    assert [site.job(i)["status"] for i in failed] == ["pending"] * 5
    assert site.job(other_failed)["status"] == "failed"
    assert site.job(pending)["status"] == "pending"
    assert site.job(done)["status"] == "completed"

    # The preview counts only what the action may touch: nothing failed is left to retry.
    site.open("/bulk?action=retry&name=import")
    assert site.text("#preview-count") == "0"
    assert not site.exists("#bulk-do")


HOSTILE = "<img src=x onerror=alert(1)>"  # whitespace: the engine refuses it as a name
HOSTILE_OK = "</td><script>window.__pwned=2</script>"  # a name the engine accepts
PAYLOAD = {"html": "<script>window.__pwned=1</script>"}


def assert_inert(site: Site) -> None:
    """Nothing from a job ran or became markup."""
    driver = site.driver
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when no dialog is open
    assert not site.exists("img[src=x]")
    assert not site.exists("img")
    scripts = driver.execute_script("return [...document.scripts].map(s => s.src)")
    assert scripts == [f"{site.base}/static/dashboard.js"]
    handlers = driver.execute_script(
        "return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
        ".map(a => a.name).filter(n => n.startsWith('on'))"
    )
    assert handlers == []


def test_hostile_job_content_is_shown_as_text(serve: Serve, mongo_db: Database[Doc]) -> None:
    monque = Monque(mongo_db)
    reason = "<b>bad</b><img src=x onerror=alert(2)>"
    hostile = insert_job(mongo_db, HOSTILE, "failed", PAYLOAD, failReason=reason)
    accepted = monque.enqueue_sync(HOSTILE_OK, PAYLOAD).id
    site = serve(allow_actions=True)

    site.open("/")
    assert sorted(site.texts("#names a.job-name")) == sorted([HOSTILE, HOSTILE_OK])
    assert_inert(site)

    site.open("/jobs")
    assert sorted(e.text for e in site.driver.find_elements(By.CSS_SELECTOR, "td.job-name")) == (
        sorted([HOSTILE, HOSTILE_OK])
    )
    assert site.text(f"tr[data-id='{hostile}'] td.reason") == reason
    assert_inert(site)

    # Typed into the filter, it round-trips through the URL and the form's value attribute.
    site.driver.find_element(By.ID, "f-name").send_keys(HOSTILE)
    site.click("#apply")
    assert site.ids() == [str(hostile)]
    assert site.driver.find_element(By.ID, "f-name").get_attribute("value") == HOSTILE
    assert_inert(site)
    Select(site.driver.find_element(By.ID, "bulk-action")).select_by_value("delete")
    site.click("#bulk-preview")  # only previewed
    assert site.text(".criteria .mono") == HOSTILE
    assert site.text("#preview-count") == "1"
    assert_inert(site)

    for job_id, name in ((hostile, HOSTILE), (accepted, HOSTILE_OK)):
        site.open(f"/jobs/{job_id}")
        assert site.text("#job-name") == name
        assert site.driver.title.startswith(name)
        assert json.loads(site.text("#data")) == PAYLOAD
        assert_inert(site)
    assert site.text("#job-status") == "pending"
    site.open(f"/jobs/{hostile}")
    assert site.text("#fail-reason") == reason

    # Clicking a name in the overview filters by it, however it is spelled.
    site.open("/")
    link = next(
        a
        for a in site.driver.find_elements(By.CSS_SELECTOR, "#names a.job-name")
        if a.text == HOSTILE_OK
    )
    site.submit(link)
    assert site.ids() == [str(accepted)]
    assert_inert(site)


def test_live_updates_add_rows_without_a_reload(serve: Serve, mongo_db: Database[Doc]) -> None:
    monque = Monque(mongo_db)
    first = monque.enqueue_sync("ping", {"n": 1})
    site = serve(poll_interval=1.0)  # without change streams, ticks every second
    site.open("/jobs")
    assert site.ids() == [str(first.id)]
    site.until_live()
    site.driver.execute_script("window.__sameDocument = true")

    second = monque.enqueue_sync("ping", {"n": 2})
    wait(site.driver, 10).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-id='{second.id}']"))
    )
    assert site.ids() == [str(second.id), str(first.id)]
    assert site.driver.execute_script("return window.__sameDocument") is True
    assert site.driver.execute_script("return document.body.dataset.updated")
    # The swapped-in rows get local times too.
    wait(site.driver).until(
        lambda d: all(
            t.text != t.get_attribute("datetime")
            for t in d.find_elements(By.CSS_SELECTOR, "#live time")
        )
    )

    # A job's own page follows its status.
    site.open(f"/jobs/{first.id}")
    site.until_live()
    mongo_db.monque_jobs.update_one(
        {"_id": first.id},
        {"$set": {"status": "failed", "failReason": "went wrong", "failedAt": now()}},
    )
    wait(site.driver, 10).until(lambda d: d.find_element(By.ID, "job-status").text == "failed")
    assert site.text("#fail-reason") == "went wrong"


def test_the_live_overview_catches_up_with_quick_writes(
    serve: Serve, mongo_db: Database[Doc]
) -> None:
    """Review: a second write within the overview's shared-figures age left the live page
    showing the old count for good."""
    monque = Monque(mongo_db)
    monque.enqueue_sync("a", {})
    site = serve()
    site.open("/")
    site.until_live()

    assert pending_count(site.driver) == "1"
    monque.enqueue_sync("a", {})
    wait(site.driver, 10).until(lambda d: pending_count(d) == "2")
    monque.enqueue_sync("a", {})
    wait(site.driver, 10).until(lambda d: pending_count(d) == "3")
    # Focus on a link inside the live region does not hold updates back.
    site.driver.find_element(By.CSS_SELECTOR, "#live a.job-name").send_keys("")
    site.driver.execute_script("document.querySelector('#live a.job-name').focus()")
    monque.enqueue_sync("a", {})
    wait(site.driver, 10).until(lambda d: pending_count(d) == "4")


def test_a_resumed_live_page_shows_what_changed_while_it_was_paused(
    serve: Serve, mongo_db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: resuming reloaded from figures shared across requests, computed before the
    pause; no stream had seen the writes made meanwhile, so the page stayed stale."""
    from monque.dashboard import app as dashboard_app

    monkeypatch.setattr(dashboard_app, "OVERVIEW_MAX_AGE", 60.0)  # figures shared for long
    monque = Monque(mongo_db)
    monque.enqueue_sync("a", {})
    site = serve()
    site.open("/")
    site.until_live()

    assert pending_count(site.driver) == "1"
    site.driver.find_element(By.ID, "live-toggle").click()
    wait(site.driver).until(lambda d: d.find_element(By.ID, "live-state").text == "paused")
    monque.enqueue_sync("a", {})
    monque.enqueue_sync("a", {})
    assert pending_count(site.driver) == "1", "paused: no update"
    site.driver.find_element(By.ID, "live-toggle").click()
    wait(site.driver, 10).until(lambda d: pending_count(d) == "3")
    assert site.driver.find_element(By.ID, "live-state").text == "live"


def test_times_are_shown_and_read_in_the_viewers_zone(
    serve: Serve, mongo_db: Database[Doc]
) -> None:
    at = now()
    made = {
        hours: insert_job(mongo_db, "tick", "pending", job_id=id_at(at - timedelta(hours=hours)))
        for hours in (3, 2, 1)
    }
    site = serve(allow_actions=True)
    assert site.driver.execute_script("return new Date().getTimezoneOffset()") == -330

    site.open("/jobs")
    times = site.driver.find_elements(By.CSS_SELECTOR, "time[datetime]")
    assert len(times) >= 7  # due and created per job, the server time
    for element in times:
        stamp = str(element.get_attribute("datetime"))
        assert element.text != stamp
        assert element.get_attribute("title") == stamp
        assert plain(element.text) == viewer_time(from_iso(stamp))

    # A filter typed in local time selects by UTC creation time, and reads back the same.
    local_from = (at - timedelta(hours=2, minutes=30)).astimezone(VIEWER)
    typed = local_from.strftime("%Y-%m-%dT%H:%M:%S")
    field = site.driver.find_element(By.ID, "f-from")
    site.driver.execute_script("arguments[0].value = arguments[1]", field, typed)
    site.click("#apply")
    assert site.ids() == [str(made[1]), str(made[2])]
    assert site.driver.find_element(By.ID, "f-from").get_attribute("value") == typed

    # Rescheduling takes the local time the viewer typed.
    site.open(f"/jobs/{made[1]}")
    run_at = site.driver.find_element(By.ID, "run-at")
    site.driver.execute_script("arguments[0].value = '2031-03-04T05:06:07'", run_at)
    site.click("#act-reschedule")
    assert site.text("#done") == "Done: reschedule"
    due = site.job(made[1])["nextRunAt"].replace(tzinfo=timezone.utc)
    assert due == datetime(2031, 3, 3, 23, 36, 7, tzinfo=timezone.utc)
    shown = site.driver.find_element(By.CSS_SELECTOR, "#fields time")  # Due
    assert plain(shown.text) == "3/4/2031, 5:06:07 AM"


@pytest.fixture
def berlin() -> Iterator[WebDriver]:
    """A second browser, in a zone with daylight saving time."""
    driver = chrome("Europe/Berlin")
    try:
        yield driver
    finally:  # torn down before the test's server: leave its page (its event stream) first
        driver.get("about:blank")
        driver.quit()


def test_local_times_use_their_own_dates_offset(
    serve: Serve, berlin: WebDriver, mongo_db: Database[Doc]
) -> None:
    """Winter is UTC+1 in Berlin, summer UTC+2, whatever the offset is today."""
    year = datetime.now(timezone.utc).year + 1
    winter = datetime(year, 1, 15, 11, 0, 0, tzinfo=timezone.utc)  # 12:00 CET
    summer = datetime(year, 7, 15, 10, 0, 0, tzinfo=timezone.utc)  # 12:00 CEST
    jobs = {
        when: insert_job(mongo_db, "tick", "pending", job_id=id_at(when))
        for when in (winter, summer)
    }
    site = Site(berlin, mongo_db, serve(allow_actions=True).base)

    # A filter from 12:00 local on each date keeps exactly the jobs created from then on.
    for when, shown in ((winter, [jobs[summer], jobs[winter]]), (summer, [jobs[summer]])):
        site.open("/jobs")
        typed = f"{when:%Y-%m}-15T12:00:00"
        field = site.driver.find_element(By.ID, "f-from")
        site.driver.execute_script("arguments[0].value = arguments[1]", field, typed)
        site.click("#apply")
        assert site.ids() == [str(i) for i in shown], typed
        value = site.driver.find_element(By.ID, "f-from").get_attribute("value")
        assert value in (typed, typed[:-3]), value  # reads back as typed (seconds optional)

    # 12:00 typed on either date is 12:00 on that date in Berlin.
    for when in (winter, summer):
        job_id = jobs[when]
        site.open(f"/jobs/{job_id}")
        run_at = site.driver.find_element(By.ID, "run-at")
        site.driver.execute_script(
            "arguments[0].value = arguments[1]", run_at, f"{when:%Y-%m}-20T12:00:00"
        )
        site.click("#act-reschedule")
        due = site.job(job_id)["nextRunAt"].replace(tzinfo=timezone.utc)
        assert due == when.replace(day=20), (when, due)
