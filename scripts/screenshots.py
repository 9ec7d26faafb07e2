"""Screenshots of the dashboard for the docs: an embedded MongoDB, a realistic queue, the
dashboard served with actions enabled, and headless Chromium saving one PNG per page.

    .venv/bin/python scripts/screenshots.py [--out docs/images]

Needs the embedded server (``monque-py[embedded]``), the dashboard extra, selenium, and
Debian's ``chromium`` and ``chromium-driver`` (or any chromium/chromedriver on PATH).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import uvicorn
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from monque import Monque
from monque.dashboard import create_app
from monque.testing.server import EmbeddedMongo, free_port

Doc = dict[str, Any]
WIDTH, HEIGHT = 1280, 900
MAX_HEIGHT = 1400  # a full page, but not fifty rows of the jobs list
WORKER = "worker-7f3c9a2e"
IDLE_WORKER = "worker-b41d07c5"

FAILURES = {
    "send-email": "SMTPServerDisconnected: Connection unexpectedly closed",
    "resize-image": "PIL.UnidentifiedImageError: cannot identify image file 'upload-8812.heic'",
    "sync-crm": "HTTPStatusError: 429 Too Many Requests from https://api.crm.example/v2/contacts",
    "generate-invoice": "ValueError: customer 4711 has no billing address",
}
TRACEBACK = """Traceback (most recent call last):
  File "/app/jobs/crm.py", line 88, in sync_contacts
    response.raise_for_status()
  File "/app/.venv/lib/python3.12/site-packages/httpx/_models.py", line 829, in raise_for_status
    raise HTTPStatusError(message, request=request, response=self)
httpx.HTTPStatusError: Client error '429 Too Many Requests' for url \
'https://api.crm.example/v2/contacts?page=14'"""


def data_for(name: str, rng: random.Random) -> Doc:
    n = rng.randint(1000, 9999)
    if name == "send-email":
        return {"to": f"customer{n}@example.com", "template": rng.choice(["welcome", "receipt"])}
    if name == "resize-image":
        return {"upload": f"upload-{n}.jpg", "sizes": [320, 640, 1280]}
    if name == "sync-crm":
        return {"account": f"acct_{n}", "since": "2026-11-28T00:00:00Z", "page": rng.randint(1, 20)}
    return {"customer": n, "period": "2026-11", "currency": "EUR"}


def id_at(when: datetime) -> ObjectId:
    """A fresh id whose creation time (the jobs page's "Created") is ``when``."""
    return ObjectId(int(when.timestamp()).to_bytes(4, "big") + ObjectId().binary[4:])


def ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def seed(db: Database[Doc]) -> ObjectId:
    """A queue an hour into a busy day; returns the id of the failed job to show."""
    rng = random.Random(7)
    now = ms(datetime.now(timezone.utc))
    names = ["send-email", "resize-image", "sync-crm", "generate-invoice"]
    weights = [8, 4, 2, 1]
    docs: list[Doc] = []

    def job(name: str, status: str, created: datetime, **fields: Any) -> Doc:
        doc: Doc = {
            "_id": id_at(created),
            "name": name,
            "data": data_for(name, rng),
            "status": status,
            "nextRunAt": created,
            "failCount": 0,
            "priority": 0,
            "createdAt": created,
            "updatedAt": created,
            **fields,
        }
        docs.append(doc)
        return doc

    # Finished in the last hour, busier lately: the chart gets bars of different heights.
    for _ in range(420):
        name = rng.choices(names, weights)[0]
        ago = timedelta(seconds=3600 * rng.betavariate(1.2, 2.2))
        finished = now - ago
        created = finished - timedelta(seconds=rng.uniform(0.5, 40))
        if rng.random() < 0.07:
            job(
                name,
                "failed",
                created,
                failCount=3,
                failReason=FAILURES[name],
                failedAt=finished,
                startedAt=finished - timedelta(seconds=rng.uniform(0.1, 3)),
                updatedAt=finished,
            )
        else:
            job(
                name,
                "completed",
                created,
                startedAt=finished - timedelta(seconds=rng.uniform(0.05, 5)),
                completedAt=finished,
                updatedAt=finished,
            )
    # Waiting: new ones, a few retrying after a failed attempt, some scheduled for later.
    for i in range(37):
        name = rng.choices(names, weights)[0]
        created = now - timedelta(seconds=rng.uniform(1, 240))
        fields: Doc = {}
        if i % 6 == 0:
            failed_at = created + timedelta(seconds=2)
            fields = {
                "failCount": 1,
                "failReason": FAILURES[name],
                "failedAt": failed_at,
                "nextRunAt": failed_at + timedelta(seconds=30),
                "updatedAt": failed_at,
            }
        elif i % 5 == 0:
            fields = {"nextRunAt": now + timedelta(minutes=rng.randint(5, 90))}
        job(name, "pending", created, **fields)
    # Running on the live worker.
    for name, started in (("resize-image", 4), ("sync-crm", 21), ("generate-invoice", 2)):
        begun = now - timedelta(seconds=started)
        job(
            name,
            "processing",
            begun - timedelta(seconds=1),
            claimedBy=WORKER,
            lockedAt=begun,
            startedAt=begun,
            lastHeartbeat=now - timedelta(seconds=1),
            lockExpiresAt=now + timedelta(seconds=29),
            updatedAt=begun,
        )
    docs[-2]["progress"] = {"value": 62.0, "message": "page 9 of 14", "at": now}
    job(
        "send-email",
        "cancelled",
        now - timedelta(minutes=7),
        cancelledAt=now - timedelta(minutes=6),
    )
    # The failed job the detail page shows: a traceback and a few fields of data.
    shown = job(
        "sync-crm",
        "failed",
        now - timedelta(minutes=3),
        data={
            "account": "acct_5521",
            "since": "2026-11-28T00:00:00Z",
            "page": 14,
            "dry_run": False,
        },
        failCount=5,
        failReason=FAILURES["sync-crm"],
        failTraceback=TRACEBACK,
        failedAt=now - timedelta(seconds=50),
        startedAt=now - timedelta(seconds=51),
        updatedAt=now - timedelta(seconds=50),
        priority=5,
    )
    db.monque_jobs.insert_many(docs)

    monque = Monque(db)
    report = monque.schedule_sync(
        "0 3 * * *", "nightly-report", {"format": "pdf"}, timezone="Europe/Berlin"
    )
    cleanup = monque.schedule_sync("*/15 * * * *", "cleanup-sessions", {"older_than_days": 30})
    db.monque_jobs.update_one(
        {"_id": report.id}, {"$set": {"completedAt": now - timedelta(hours=9, minutes=58)}}
    )
    db.monque_jobs.update_one(
        {"_id": cleanup.id},
        {
            "$set": {
                "failedAt": now - timedelta(minutes=11),
                "failReason": "OperationFailure: lock timeout on sessions collection",
            }
        },
    )

    for worker, host, pid, age in ((WORKER, "app-1", 4242, 52), (IDLE_WORKER, "app-2", 977, 18)):
        db.monque_jobs_instances.insert_one(
            {
                "_id": worker,
                "host": host,
                "pid": pid,
                "startedAt": now - timedelta(minutes=age),
                "lastSeen": now - timedelta(seconds=3),
                "expiresAt": now + timedelta(minutes=10),
            }
        )
    return ObjectId(shown["_id"])


def browser() -> WebDriver:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit(
            "screenshots: needs chromium and chromedriver "
            "(apt-get install chromium chromium-driver)"
        )
    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        "--lang=en-US",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def viewport(driver: WebDriver, height: int) -> None:
    """The page's viewport exactly ``WIDTH`` x ``height`` (a window's size includes its frame)."""
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def shoot(driver: WebDriver, url: str, path: Path) -> None:
    viewport(driver, HEIGHT)
    driver.get(url)
    WebDriverWait(driver, 10).until(
        lambda d: (
            d.execute_script("return document.getElementById('live-state').textContent") == "live"
        )
    )
    height = driver.execute_script("return document.documentElement.scrollHeight")
    viewport(driver, min(max(int(height), HEIGHT), MAX_HEIGHT))
    driver.save_screenshot(str(path))
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "docs/images")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    with EmbeddedMongo() as mongo:
        client: MongoClient[Doc] = MongoClient(mongo.uri)
        server: uvicorn.Server | None = None
        thread: threading.Thread | None = None
        driver: WebDriver | None = None
        try:
            db = client.monque_demo
            shown = seed(db)
            app = create_app(db, allow_actions=True, title="Monque")
            port = free_port()
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
            thread.start()
            deadline = time.monotonic() + 15
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    sys.exit("screenshots: the dashboard server did not start")
                time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            driver = browser()
            for page, path in (
                ("overview", "/"),
                ("jobs", "/jobs"),
                ("job", f"/jobs/{shown}"),
                ("schedules", "/schedules"),
            ):
                shoot(driver, base + path, out / f"dashboard-{page}.png")
        finally:
            if driver is not None:
                driver.get("about:blank")  # closes the page's event stream
                driver.quit()
            if server is not None and thread is not None:
                server.should_exit = True
                thread.join(15)
            client.close()


if __name__ == "__main__":
    main()
