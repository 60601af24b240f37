"""The main job end to end: `regionkit demo` on the example policy, shorter durations.

Checks the figures the demo reports, that every report was written, that nothing is
left running, and that the HTML reports open in headless Chromium without errors
(with a screenshot kept under .build/screenshots/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    work = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONKIT_")}
    env["REGIONKIT_STATE_FILE"] = str(work / "no-cluster.json")  # never reuse a running cluster
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--policy",
            str(ROOT / "policies" / "social-network.yaml"),
            "demo",
            "--duration",
            "1.5",
            "--users",
            "1",
            "--rounds",
            "1",
            "--report-dir",
            str(work / "regionkit-report"),
        ],
        cwd=work,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((work / "regionkit-report" / "demo-summary.json").read_text())
    return work, summary, proc.stdout


def test_demo_figures(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    _, s, out = demo_run
    assert {r["jurisdiction"] for r in s["routing"]} == {"IN", "BR", "EU", "US"}
    for r in s["routing"]:
        assert r["users"] > 0 and r["stayed_inside"], r
        assert set(r["profiles_written_in"]) <= set(r["home_regions"])
    assert s["traffic"]["posts"] > 0 and s["traffic"]["concurrent_edits"] > 0
    assert [d["scenario"] for d in s["drills"]] == ["region-outage", "replication-pause"]
    for d in s["drills"]:
        assert d["verdict"] == "pass", d["reasons"]
        assert d["residency_violations"] == 0
        assert d["convergence_seconds"] is not None
    outage = s["drills"][0]
    assert outage["region"] == "ap-south-1" and outage["rto_seconds"] is not None
    assert outage["rto_seconds"] <= outage["targets"]["rto_seconds"]
    assert s["conflicts"]["total"] > 0
    assert s["audit"]["failing_high_or_worse"] == 0
    assert s["audit"]["by_status"]["ERROR"] == 0
    assert s["seconds"] < 180
    assert "routing per jurisdiction" in out and "drills against" in out


def test_demo_writes_every_report(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    work, s, _ = demo_run
    reports = work / "regionkit-report"
    names = {p.name for p in reports.iterdir()}
    for name in (
        "demo-summary.json",
        "demo-summary.md",
        "audit.json",
        "audit.md",
        "audit.html",
        "audit.junit.xml",
        "audit.ocsf.json",
    ):
        assert name in names
    for ext in (".json", ".md", ".html"):
        assert sum(n.startswith("drill-") and n.endswith(ext) for n in names) == 2
    assert list((work / ".regionkit" / "drills").glob("*.json"))  # the drill history
    audit = json.loads((reports / "audit.json").read_text())
    assert audit["report_sha256"] == s["audit"]["report_sha256"]


def test_demo_leaves_no_process_behind(demo_run: tuple[Path, dict[str, Any], str]) -> None:
    work, _, _ = demo_run
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(work) not in out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_reports_open_in_headless_chromium(
    demo_run: tuple[Path, dict[str, Any], str],
) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium (.ci/run installs it)")
        pytest.skip("no chromium on this machine: the HTML reports were not opened in a browser")
    work, _, _ = demo_run
    shots = ROOT / ".build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = [
        work / "regionkit-report" / "audit.html",
        *sorted((work / "regionkit-report").glob("drill-*.html")),
    ]
    for page in pages:
        shot = shots / f"{page.stem}.png"
        profile = work / f"chrome-{page.stem}"
        proc = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--window-size=1280,1600",
                f"--screenshot={shot}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert shot.exists() and shot.stat().st_size > 10_000
        console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
        assert not console, console
