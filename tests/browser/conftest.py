"""Browser tests: the real server in a thread, jobs logging through the SDK, Debian's Chromium.

One server and one SDK client serve the whole session, one browser each test
module (each test uses runs of its own); each test gets a fresh browser context at 1400x900 that signed
in the way a user does, by opening the studio's address with ``#token=...``. A
JavaScript error on a page fails the test that opened it.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

import runstream
from runstream.sdk import Run
from runstream.sdk.client import Client, set_client
from runstream.settings import Settings
from runstream.studio import DIST_DIR
from tests.browser import seed
from tests.conftest import unique
from tests.sdk.conftest import ThreadServer, make_client

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TOKEN = "browser-token"


@pytest.fixture(scope="session")
def studio_server(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    if not (DIST_DIR / "index.html").is_file():
        pytest.fail(f"the studio is not built in {DIST_DIR}: run scripts/install --dev")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("studio") / "data",
        clickhouse_dsn=f"chdb://{chdb_path}",
        clickhouse_database=unique("studio"),
        topic_prefix=unique("studio"),
        partitions=3,
        token=TOKEN,
        port=0,
    )
    server = ThreadServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sdk_client(studio_server: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """The SDK client the browser tests' jobs log through (installed only while they run: ``using``)."""
    client = make_client(studio_server, tmp_path_factory.mktemp("sdk"))
    try:
        yield client
    finally:
        client.close(timeout=10)


@contextlib.contextmanager
def using(client: Client) -> Iterator[Client]:
    """``runstream.start_run`` and friends log through ``client`` inside the block."""
    old = set_client(client)
    try:
        yield client
    finally:
        set_client(old)


@pytest.fixture
def sdk(sdk_client: Client) -> Iterator[Client]:
    """For a test that logs: the process's SDK client is the browser tests' one while it runs."""
    with using(sdk_client):
        yield sdk_client


def wait_projected(*runs: Run) -> None:
    """Return once the query API shows everything these runs logged (read-your-writes)."""
    for run in runs:
        run.get_details()


@dataclass
class Seeded:
    experiment: seed.SeededExperiment
    cluster: seed.Cluster


@pytest.fixture(scope="session")
def seeded(sdk_client: Client) -> Iterator[Seeded]:
    """A finished experiment of five runs, and a GPU cluster with runs running and queued."""
    with using(sdk_client):
        experiment = seed.seed_experiment()
        cluster = seed.seed_cluster()
        wait_projected(*cluster.open_runs, *experiment.handles)
    try:
        yield Seeded(experiment, cluster)
    finally:
        with using(sdk_client):
            cluster.finish()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module: Playwright's sync API holds an event loop while it runs,
    which the asyncio tests of other modules must not find."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install --dev installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, studio_server: ThreadServer) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light", base_url=studio_server.base_url)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"/#token={studio_server.token}")
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Page, name: str) -> None:
    """Save what the page shows as tests/browser/screenshots/<name>.png (committed for reviewers)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.wait_for_timeout(150)  # let the last frame of a chart be drawn
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@dataclass
class TrainingJob:
    """A training script in a background thread: logs loss and accuracy every ~30 ms and prints progress."""

    experiment: str
    name: str
    snapshot_dir: Path
    run: Run | None = None
    logged: list[tuple[int, float]] = field(default_factory=list)
    """(step, time.monotonic() when ``run.flush()`` returned: the server acknowledged the point)"""
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Run:
        self._thread = threading.Thread(target=self._train, name=f"job {self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the job did not start")
        assert self.run is not None
        return self.run

    def say(self, line: str) -> None:
        """Have the job print ``line`` (to its stdout, so to the run's log)."""
        with self._lock:
            self._lines.append(line)

    def flushed_after(self, moment: float, timeout: float = 10.0) -> tuple[int, float]:
        """The first step whose flush returned after ``moment`` (time.monotonic()), and when it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for step, at in list(self.logged):
                if at > moment:
                    return step, at
            time.sleep(0.005)
        raise AssertionError("the job logged nothing")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _train(self) -> None:
        run = runstream.start_run(
            self.experiment,
            name=self.name,
            compute=seed.CLUSTER,
            tags={"arch": "resnet18", "team": "vision"},
            capture_output=True,
            snapshot_dir=self.snapshot_dir,
        )
        self.run = run
        run.set_properties(lr=0.05, batch_size=128, epochs=30)
        seed.log_values(run)
        rng = random.Random(5)
        step = 0
        try:
            while not self._stop.is_set():
                loss = (0.15 + 2.1 * math.exp(-step / 40)) * (1 + rng.gauss(0, 0.03))
                run.log("loss", loss, step=step)
                run.log("accuracy", min(0.99, 1 - loss / 2.4 + rng.gauss(0, 0.005)), step=step)
                if step % 10 == 0:
                    print(f"epoch {step // 10}: loss={loss:.4f} accuracy={1 - loss / 2.4:.4f}", flush=True)
                if step == 25:
                    print("warning: dataloader worker 3 is slow", file=sys.stderr, flush=True)
                with self._lock:
                    lines, self._lines = self._lines, []
                for line in lines:
                    print(line, flush=True)
                run.flush(timeout=10)
                self.logged.append((step, time.monotonic()))
                if step == 15:
                    self._started.set()
                step += 1
                time.sleep(0.03)
        finally:
            self._started.set()
            run.complete()
            run.flush(timeout=10)


@pytest.fixture
def training_job(sdk: Client, tmp_path: Path) -> Iterator[TrainingJob]:
    source = tmp_path / "project"  # the training script's folder: the run's snapshot
    source.mkdir()
    (source / "train.py").write_text('import runstream\n\nrun = runstream.start_run("mnist")\n')
    (source / "config.yaml").write_text("lr: 0.05\nbatch_size: 128\nepochs: 30\n")
    job = TrainingJob(seed.EXPERIMENT, "resnet18 live", source)
    try:
        yield job
    finally:
        job.stop()
