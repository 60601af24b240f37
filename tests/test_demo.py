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
from cluster_fixtures import (
    LEAK_TAG_VAR,
    assert_no_process_left,
    new_leak_tag,
    processes_tagged,
)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.wallclock]
# A bound for a broken run only: the demo takes about a minute on a quiet 2-core
# machine and over five with a load average of 25 (measured); how long it takes is
# a figure for the README, not a test assertion.
DEMO_PATIENCE = 1500.0


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], str, str]:
    work = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONKIT_")}
    env["REGIONKIT_STATE_FILE"] = str(work / "no-cluster.json")  # never reuse a running cluster
    tag = new_leak_tag()  # every process the demo starts inherits it
    env[LEAK_TAG_VAR] = tag
    env.update({"COLUMNS": "80", "NO_COLOR": "1"})  # an 80-column terminal, piped
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--policy",
            str(ROOT / "policies" / "social-network.yaml"),
            "demo",
            # The drills' routers run with the service's default settings (1 s read
            # timeout, a breaker after 3 failures): failover takes 1-2 s, so the fault
            # lasts long enough to see it.
            "--duration",
            "4",
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
        timeout=DEMO_PATIENCE,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((work / "regionkit-report" / "demo-summary.json").read_text())
    (work / "stderr.txt").write_text(proc.stderr, encoding="utf-8")
    return work, summary, proc.stdout, tag


def test_demo_figures(demo_run: tuple[Path, dict[str, Any], str, str]) -> None:
    _, s, out, _ = demo_run
    assert {r["jurisdiction"] for r in s["routing"]} == {"IN", "BR", "EU", "US"}
    for r in s["routing"]:
        assert r["users"] > 0 and r["stayed_inside"], r
        assert set(r["profiles_written_in"]) <= set(r["home_regions"])
    assert s["traffic"]["posts"] > 0 and s["traffic"]["concurrent_edits"] > 0
    assert [d["scenario"] for d in s["drills"]] == ["region-outage", "replication-pause"]
    for d in s["drills"]:
        # RTO, RPO and residency must hold. Convergence under load is slower in this build
        # than the example's 10 s target on a 2-core machine (known, see the README):
        # the only reason a demo drill may miss is that one.
        assert all(r.startswith("convergence took") for r in d["reasons"]), d["reasons"]
        assert d["residency_violations"] == 0
        assert d["convergence_seconds"] is not None
    outage = s["drills"][0]
    assert outage["region"] == "ap-south-1" and outage["rto_seconds"] is not None
    assert outage["rto_seconds"] <= outage["targets"]["rto_seconds"]
    assert s["conflicts"]["total"] > 0
    assert s["audit"]["failing_high_or_worse"] == 0
    assert s["audit"]["by_status"]["ERROR"] == 0
    assert s["seconds"] > 0
    assert "routing per jurisdiction" in out and "drills against" in out


def test_demo_writes_every_report(demo_run: tuple[Path, dict[str, Any], str, str]) -> None:
    work, s, _, _ = demo_run
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


REPRS = ("{'", "None", "[]", "[{", "datetime(")


def test_demo_output_fits_80_columns_and_logs_stay_out(
    demo_run: tuple[Path, dict[str, Any], str, str],
) -> None:
    work, s, out, _ = demo_run
    lines = out.splitlines()
    assert not [ln for ln in lines if len(ln) > 80], [ln for ln in lines if len(ln) > 80]
    assert "…" not in out and "\x1b[" not in out
    assert not [r for r in REPRS if r in out]
    err = (work / "stderr.txt").read_text()
    assert "circuit opened" not in err and "[warning" not in err  # logs go to the file
    # a long path goes on the next line (80 columns), whole
    assert s["log_file"].endswith("regionkit.log")
    assert f"logs: {s['log_file']}" in " ".join(out.split())


def test_demo_reports_have_no_python_reprs(
    demo_run: tuple[Path, dict[str, Any], str, str],
) -> None:
    reports = demo_run[0] / "regionkit-report"
    pages = [
        reports / "demo-summary.md",
        *reports.glob("drill-*.md"),
        *reports.glob("drill-*.html"),
    ]
    for page in pages:
        text = page.read_text("utf-8")
        assert not [r for r in REPRS if r in text], page.name
    md = (reports / "demo-summary.md").read_text("utf-8")
    # "n/a" always comes with its reason ("n/a, replication-pause does not stop writes")
    assert all(md[i + 3 : i + 5] == ", " for i in range(len(md)) if md.startswith("n/a", i))


def test_demo_leaves_no_process_behind(demo_run: tuple[Path, dict[str, Any], str, str]) -> None:
    *_, tag = demo_run
    assert_no_process_left(tag)


def test_the_leak_check_finds_a_leaked_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: a server left running on purpose is found."""
    from regions.local.servers import start_servers

    tag = new_leak_tag()
    monkeypatch.setenv(LEAK_TAG_VAR, tag)
    server = start_servers(["eu-west-1"], log_dir=tmp_path)["eu-west-1"]
    try:
        assert set(processes_tagged(tag)) == {server.pid}
        with pytest.raises(AssertionError, match="processes left behind"):
            assert_no_process_left(tag, timeout=0.2)
    finally:
        server.stop()
    assert_no_process_left(tag)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.browser
def test_html_reports_open_in_headless_chromium(
    demo_run: tuple[Path, dict[str, Any], str, str],
) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium (.ci/run installs it)")
        pytest.skip("no chromium on this machine: the HTML reports were not opened in a browser")
    work, *_ = demo_run
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
    from test_drill_reports import check_report_in_browser

    for page in sorted((work / "regionkit-report").glob("drill-*.html")):
        check_report_in_browser(page, work, shots)  # 1280 and 800 px, nothing overflows
