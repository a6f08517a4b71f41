"""The report in a real browser: headless Chromium, offline, driven by selenium.

Every image must decode, every audio element must load its source, the tables must hold the
paper's numbers, the console must stay free of errors, and no request may leave ``file://``
(the browser runs with its network blocked). Screenshots are saved under
``$SPKADV_ARTIFACTS`` (default ``runs/test-artifacts/browser/``) and their paths printed.
Skipped when Chromium or chromedriver is absent (``make setup`` installs them as root).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from spkadv.base import config
from spkadv.report import build as report

from .test_report import PROFILE, make_fake_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
except ImportError:  # pragma: no cover - requirements.txt pins it
    webdriver = None

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and webdriver),
    reason="headless Chromium not found: apt-get install chromium chromium-driver "
    "(make setup installs them when run as root), and pip install selenium",
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # the network is off: every host resolves to nothing and any proxy use fails
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--window-size=1280,1600",
)
AUDIO_WAIT_S = 60.0
PAGE_WAIT_S = 300.0
SHOT_MAX_HEIGHT = 6000  # px; taller captures time out in the renderer on a busy machine


def artifacts_dir() -> Path:
    base = os.environ.get("SPKADV_ARTIFACTS")
    path = Path(base) if base else config.project_root() / "runs" / "test-artifacts"
    path = path / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class PageCheck:
    url: str
    bad_images: list = field(default_factory=list)
    bad_audio: list = field(default_factory=list)
    n_images: int = 0
    n_audio: int = 0
    n_math: int = 0
    console_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    text: str = ""

    @property
    def offsite(self) -> list:
        return [u for u in self.requests if not u.startswith(("file://", "data:", "about:"))]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.page_load_strategy = (
        "eager"  # short driver commands: inspect() waits for the load itself
    )
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(  # and, belt and braces, the browser itself is told it is offline
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    yield driver
    driver.quit()


def inspect(driver, page: Path, screenshot: Path | None = None) -> PageCheck:
    """Open a page and collect what failed: images, audio, console errors, requests."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    url = page.resolve().as_uri()
    driver.get(url)
    check = PageCheck(url)
    deadline = time.monotonic() + PAGE_WAIT_S  # generous: a busy machine slows the browser down
    while driver.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url}: page did not finish loading"
        time.sleep(0.25)
    deadline = time.monotonic() + AUDIO_WAIT_S
    while True:
        audio = driver.execute_script(
            "return Array.from(document.querySelectorAll('audio')).map(a => "
            "[a.currentSrc || a.src, a.readyState, a.error ? a.error.code : null, a.duration])"
        )
        pending = [a for a in audio if a[2] is None and a[1] < 2]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    check.n_audio = len(audio)
    check.bad_audio = [a for a in audio if a[2] is not None or a[1] < 2 or not a[3] > 0]
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth])"
    )
    check.n_images = len(images)
    check.bad_images = [i for i in images if not (i[1] and i[2] > 0)]
    check.n_math = driver.execute_script("return document.querySelectorAll('math').length")
    check.text = driver.execute_script("return document.body.innerText")
    check.console_errors = [
        e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")
    ]
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            check.requests.append(msg["params"]["request"]["url"])
    if screenshot is not None:
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(max(height, 800), SHOT_MAX_HEIGHT))
        try:
            driver.save_screenshot(str(screenshot))
        except TimeoutException:  # a busy machine: the first screen is still a screenshot
            driver.set_window_size(1280, 1600)
            driver.save_screenshot(str(screenshot))
        driver.set_window_size(1280, 1600)
        print(f"screenshot: {screenshot}")
    return check


def assert_clean(check: PageCheck) -> None:
    assert check.bad_images == [], f"{check.url}: images that do not decode"
    assert check.bad_audio == [], (
        f"{check.url}: audio that cannot play [src, readyState, error, duration]"
    )
    assert check.console_errors == [], f"{check.url}: console errors"
    assert check.offsite == [], f"{check.url}: requests leaving file://"
    assert check.requests and all(u.startswith("file://") for u in check.requests[:1])


def check_report(driver, index: Path, tag: str) -> dict[str, PageCheck]:
    """Inspect the landing page and every notebook page of a report."""
    shots = artifacts_dir()
    checks = {"index": inspect(driver, index, shots / f"{tag}-index.png")}
    for i, page in enumerate(sorted((index.parent / "notebooks").glob("*.html"))):
        shot = shots / f"{tag}-{page.stem}.png" if i == 0 or page.stem.startswith("40_") else None
        checks[page.stem] = inspect(driver, page, shot)
    return checks


@pytest.fixture
def fake_report(tmp_path: Path, tmp_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setattr(config, "figures_dir", lambda profile=None: figures)
    make_fake_run(tmp_runs, figures)
    return report.build(PROFILE)


def test_report_pages_work_offline_in_chromium(browser, fake_report: Path) -> None:
    checks = check_report(browser, fake_report, "fake")
    for check in checks.values():
        assert_clean(check)
    index = checks["index"]
    assert index.n_images >= 8 and index.n_audio == 16
    assert "13.95" in index.text and "paper" in index.text  # the headline's paper column
    assert "(paper 18.62" in index.text and "3.10 (3.67)" in index.text  # Tables 1 and 2
    assert checks["40_table1_eer"].n_math == 2 and checks["40_table1_eer"].n_audio == 1


def test_broken_image_and_missing_audio_fail_the_check(
    browser, fake_report: Path, tmp_path
) -> None:
    broken = tmp_path / "broken-report"
    shutil.copytree(fake_report.parent, broken)
    figure = sorted((broken / "figures").glob("*.png"))[0]
    figure.write_bytes(b"not a png")  # an image that does not decode
    clip = sorted((broken / "audio").glob("*.ogg"))[0]
    clip.unlink()  # an audio file that is gone
    check = inspect(browser, broken / "index.html")
    assert [i[0].rsplit("/", 1)[-1] for i in check.bad_images] == [figure.name]
    assert [a[0].rsplit("/", 1)[-1] for a in check.bad_audio] == [clip.name]
    assert check.console_errors  # the missing file is reported
    with pytest.raises(AssertionError):
        assert_clean(check)


def test_remote_script_would_be_caught(browser, fake_report: Path) -> None:
    page = fake_report.parent / "remote.html"
    page.write_text(
        '<html><body><script src="https://cdn.example.org/x.js"></script></body></html>'
    )
    check = inspect(browser, page)
    assert check.offsite == ["https://cdn.example.org/x.js"]


def test_report_of_a_smoke_run(browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(os.environ.get("SPKADV_SMOKE_RUN", config.runs_root() / "smoke"))
    if not (root / "summary.json").exists():
        pytest.skip(
            f"no smoke run at {root}: run python -m spkadv.run.pipeline --profile smoke "
            "(or set SPKADV_SMOKE_RUN)"
        )
    monkeypatch.setenv("SPKADV_RUNS", str(root.parent))
    index = report.build(root.name, tmp_path / "report")
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"smoke report: {index} ({size / 1e6:.2f} MB)")
    checks = check_report(browser, index, "smoke")
    for check in checks.values():
        assert_clean(check)
    text = checks["index"].text
    assert checks["index"].n_audio >= 8 and "paper" in text.split("Listening panel")[0]
    assert "(paper " in text and "Ours (paper)" in text  # Table 1 and Table 2 beside the paper
    assert all(c.n_math > 0 for name, c in checks.items() if name.startswith("40_"))
    assert size < 20e6
