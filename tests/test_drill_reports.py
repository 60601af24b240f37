"""Drill reports for people: no Python reprs, terminal output that fits 80 columns with
or without colour, JUnit for CI, inline SVG charts, and `drill compare`."""

from __future__ import annotations

import fcntl
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from regions.demo import DemoDrill, DemoRouting, DemoSummary, render_demo_markdown
from regions.drills import DrillOptions, DrillRunner, get_scenario
from regions.drills.backends import SimBackend
from regions.drills.compare import compare
from regions.drills.journal import DrillJournal
from regions.drills.report import charts, render_html, render_junit, render_markdown
from regions.local.sim import simulation
from residency.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = load_policy(ROOT / "policies" / "minimal.yaml")
REPRS = ("{'", "None", "[]", "[{", "datetime(", "Counter(")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _targets(policy: Policy, **targets: float) -> Policy:
    drills = policy.targets.drills.model_copy(update=targets)
    return policy.model_copy(
        update={"targets": policy.targets.model_copy(update={"drills": drills})}
    )


def _drill(policy: Policy, scenario: str, *, stop_at: str | None = None, **opts: Any) -> Any:
    def hook(name: str, detail: dict[str, Any]) -> None:
        if name == "phase" and detail["name"] == stop_at:
            raise KeyboardInterrupt

    options = {"duration": 0.6, "rate": 10, "recovery": 0.4, "baseline": 0.3, "seed": 7, **opts}
    with simulation(policy, seed=7) as s:
        sc = get_scenario(scenario)
        runner = DrillRunner(
            SimBackend(s),
            sc,
            sc.parse(policy, {"region": "eu-central-1"}),
            options=DrillOptions(**options),
            on_event=hook,
        )
        try:
            return runner.run()
        except KeyboardInterrupt:
            return runner.journal


@pytest.fixture(scope="session")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DrillJournal]:
    """Four simulated drills, run once per test run: under xdist the first worker writes
    them (as JSON) where the others read them, instead of each running them again."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _journals()
    shared = tmp_path_factory.getbasetemp().parent / "drill-report-journals.json"
    with open(shared.with_suffix(".lock"), "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if shared.exists():
            saved = json.loads(shared.read_text(encoding="utf-8"))
            return {name: DrillJournal.model_validate(j) for name, j in saved.items()}
        made = _journals()
        dumped = {name: j.model_dump(mode="json") for name, j in made.items()}
        shared.write_text(json.dumps(dumped), encoding="utf-8")
        return made


def _journals() -> dict[str, DrillJournal]:
    return {
        "outage": _drill(MINIMAL, "region-outage"),
        "pause-rpo-missed": _drill(
            _targets(MINIMAL, rpo_seconds=0.2), "replication-pause", lag=1.0, baseline=1.2
        ),
        "interrupted": _drill(MINIMAL, "partition", stop_at="workload"),
        "no-steady-state": _drill(_targets(MINIMAL, convergence_seconds=1e-9), "clock-skew"),
        "empty": DrillJournal.model_validate(
            {
                "drill_id": "x",
                "scenario": "region-outage",
                "target": "sim",
                "policy": "p",
                "policy_sha256": "0" * 64,
                "regions": ["eu-west-1"],
                "started_at": "2026-01-01T00:00:00Z",
            }
        ),
    }


def test_no_python_reprs_in_any_report(journals: dict[str, DrillJournal]) -> None:
    for name, j in journals.items():
        for kind, text in (("markdown", render_markdown(j)), ("html", render_html(j))):
            found = [r for r in REPRS if r in text]
            assert not found, f"{name} {kind}: {found}"
    pause = render_markdown(journals["pause-rpo-missed"])
    assert "RTO | n/a, replication-pause does not stop writes" in pause
    assert "n/a, no fault was injected" in render_markdown(journals["no-steady-state"])


def test_demo_markdown_has_no_reprs() -> None:
    s = DemoSummary(
        policy="p",
        regions=["eu-west-1", "eu-central-1"],
        routing=[
            DemoRouting(
                jurisdiction="EU",
                law="GDPR",
                users=2,
                home_regions=["eu-west-1"],
                profiles_written_in=[],
                stayed_inside=True,
            )
        ],
        traffic={"posts": 3},
        drills=[
            DemoDrill(
                scenario="replication-pause",
                region="eu-west-1",
                verdict="pass",
                rto_note="replication-pause does not stop writes",
                conflicts={"concurrent": 99, "lost_write": 23},
            ),
            DemoDrill(scenario="region-outage", region="eu-west-1", verdict="fail"),
        ],
    )
    md = render_demo_markdown(s)
    assert not [r for r in REPRS if r in md], md
    assert "n/a, replication-pause does not stop writes" in md
    assert "concurrent 99, lost_write 23" in md and "not converged" in md


def test_interrupted_journal_says_what_was_cleaned(journals: dict[str, DrillJournal]) -> None:
    j = journals["interrupted"]
    assert j.verdict == "error"
    md = render_markdown(j)
    assert "healed partition after the abort" in md
    assert "no fault left in place" in md


def test_html_charts_are_inline_small_svg(journals: dict[str, DrillJournal]) -> None:
    j = journals["pause-rpo-missed"]
    svgs = charts(j)
    assert len(svgs) == 4
    for svg in svgs:
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert "<script" not in svg and "href" not in svg
        assert len(svg.encode()) < 16_000
    page = render_html(j)
    assert page.count("<svg") == 4 and "fill-opacity" in page  # the fault window
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page


def test_junit_one_case_per_target(journals: dict[str, DrillJournal]) -> None:
    root = ET.fromstring(render_junit(journals["pause-rpo-missed"]))
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["RTO", "RPO exposure", "Convergence after heal", "Residency violations"]
    assert cases["RPO exposure"].find("failure") is not None
    assert cases["RTO"].find("skipped") is not None  # a pause does not stop writes
    assert cases["Residency violations"].find("failure") is None
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    ok = ET.fromstring(render_junit(journals["outage"])).find("testsuite")
    assert ok is not None and ok.get("failures") == "0"


def test_compare_flags_regressions(journals: dict[str, DrillJournal]) -> None:
    a, b = journals["outage"], journals["pause-rpo-missed"]
    same = compare(a, a)
    assert same.regressed == [] and same.warnings == []
    cmp = compare(a, b)
    labels = {c.label for c in cmp.regressed}
    assert {"verdict", "RPO exposure, oldest write", "RPO exposure, writes"} <= labels
    assert cmp.warnings  # different scenarios are said
    assert compare(b, a).regressed == []  # improvements are not regressions


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import cli

    try:
        cli.main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


def test_cli_compare(
    journals: dict[str, DrillJournal], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(journals["outage"].model_dump_json())
    b.write_text(journals["pause-rpo-missed"].model_dump_json())
    assert _cli(["drill", "compare", str(a), str(a)], capsys)[0] == 0
    code, out = _cli(["drill", "compare", str(a), str(b), "--json"], capsys)
    assert code == 1 and "RPO exposure, oldest write" in json.loads(out)["regressed"]
    (tmp_path / "bad.json").write_text("{}")
    assert _cli(["drill", "compare", str(a), str(tmp_path / "bad.json")], capsys)[0] == 2


@pytest.mark.parametrize(
    "env", [{}, {"NO_COLOR": "1"}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": "1", "NO_COLOR": "1"}]
)
def test_terminal_output_fits_80_columns(
    env: dict[str, str],
    journals: dict[str, DrillJournal],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from _cli.demo import print_demo
    from _cli.drill import print_drill

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for j in journals.values():
        print_drill(j)
    print_demo(
        DemoSummary(
            policy="social-network",
            regions=["ap-south-1"],
            routing=[
                DemoRouting(
                    jurisdiction="US",
                    law="US state privacy laws (CCPA/CPRA and others); default for the rest",
                    users=6,
                    home_regions=["us-east-1", "us-west-2"],
                    profiles_written_in=["us-east-1"],
                    stayed_inside=True,
                )
            ],
            traffic={"posts": 1},
            drills=[
                DemoDrill(
                    scenario="region-outage",
                    region="ap-south-1",
                    verdict="pass",
                    rto_seconds=0.61,
                    rpo_exposure=12,
                    rpo_max_age_seconds=0.08,
                    rpo_recovered=12,
                    convergence_seconds=0.9,
                    conflicts={"concurrent": 99, "inversion": 9, "lost_write": 23},
                    targets={"rto_seconds": 30, "rpo_seconds": 5, "convergence_seconds": 10},
                ),
                DemoDrill(
                    scenario="replication-pause",
                    region="us-west-2",
                    verdict="pass",
                    rto_note="replication-pause does not stop writes",
                ),
            ],
            log_file="regionkit-report/regionkit.log",
        ),
        Path("regionkit-report"),
    )
    out = capsys.readouterr().out
    if not env:  # not a terminal: plain text
        assert not ANSI.search(out)
    elif "NO_COLOR" in env:  # styles may stay, colours go
        assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", out)
    else:
        assert ANSI.search(out)
    visible = ANSI.sub("", out)
    too_long = [ln for ln in visible.splitlines() if len(ln) > 80]
    assert not too_long, too_long
    assert "…" not in visible
    assert not [r for r in REPRS if r in visible]
    assert "n/a, replication-pause" in visible and "not stop writes" in visible


# --- in a real browser ----------------------------------------------------------------

OVERFLOW_JS = """<script>
(function () {
  var bad = [], de = document.documentElement, vw = de.clientWidth;
  if (de.scrollWidth > vw + 1) bad.push("page " + de.scrollWidth + ">" + vw);
  document.querySelectorAll(".scroll, figure").forEach(function (el, i) {
    if (el.scrollWidth > el.clientWidth + 1)
      bad.push((el.className || el.tagName) + i + " " + el.scrollWidth + ">" + el.clientWidth);
  });
  document.querySelectorAll("svg, table").forEach(function (el, i) {
    var r = el.getBoundingClientRect(), p = el.parentElement.getBoundingClientRect();
    if (r.right > p.right + 1 || r.left < p.left - 1) bad.push(el.tagName + i + " overflows");
  });
  document.body.setAttribute("data-overflow", JSON.stringify(bad));
})();
</script>"""


def chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(browser: str, profile: Path, width: int, *args: str) -> str:
    import subprocess

    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},2400",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def check_report_in_browser(page: Path, work: Path, shots: Path) -> dict[int, Path]:
    """Screenshot ``page`` at 1280 and 800 px; assert no chart or table overflows."""
    import html

    browser = chromium()
    assert browser is not None
    shots.mkdir(parents=True, exist_ok=True)
    probe = work / f"{page.stem}.overflow.html"
    probe.write_text(page.read_text("utf-8").replace("</body>", OVERFLOW_JS + "</body>"))
    out: dict[int, Path] = {}
    for width in (1280, 800):
        dom = _browser(browser, work / f"chrome-{width}", width, "--dump-dom", probe.as_uri())
        found = re.search(r'data-overflow="([^"]*)"', dom)
        assert found, "the overflow probe did not run"
        assert json.loads(html.unescape(found.group(1))) == [], (width, found.group(1))
        shot = shots / f"{page.stem}-{width}.png"
        _browser(browser, work / f"chrome-{width}", width, f"--screenshot={shot}", page.as_uri())
        assert shot.stat().st_size > 10_000
        out[width] = shot
    return out


@pytest.mark.browser
def test_drill_report_fits_1280_and_800_px(
    journals: dict[str, DrillJournal], tmp_path: Path
) -> None:
    import os

    from regions.drills.report import write_reports

    if chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have chromium")
        pytest.skip("no chromium on this machine")
    for name in ("outage", "pause-rpo-missed", "interrupted"):
        page = write_reports(journals[name], tmp_path / name)["html"]
        check_report_in_browser(page, tmp_path / name, ROOT / ".build" / "screenshots")


def test_drill_list_plan_and_history_fit_80_columns(
    journals: dict[str, DrillJournal],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from regions.drills import save_journal

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    for j in journals.values():
        save_journal(j, tmp_path / ".regionkit" / "drills")
    policy = ["--policy", str(ROOT / "policies" / "minimal.yaml")]
    for args in (
        ["drill", "history"],
        ["drill", "list"],
        ["drill", "plan", "region-outage", "--region", "eu-west-1"],
    ):
        code, out = _cli([*policy, *args], capsys)
        assert code == 0, out
        assert not [ln for ln in out.splitlines() if len(ln) > 80], args
        assert "…" not in out and "None" not in out, args


@pytest.mark.slow  # the CLI runs a whole drill
def test_cli_drill_run_on_the_simulation_writes_junit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    code, out = _cli(
        [
            "--policy",
            str(ROOT / "policies" / "minimal.yaml"),
            "drill",
            "run",
            "replication-pause",
            "--region",
            "eu-west-1",
            "--target",
            "sim",
            "--duration",
            "0.5",
            "--format",
            "junit",
            "--report-dir",
            str(tmp_path / "rep"),
        ],
        capsys,
    )
    assert code == 0, out
    [junit] = (tmp_path / "rep").glob("drill-*.junit.xml")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "0"
    # tables and sentences fit; a file path is printed whole, however long
    assert not [ln for ln in out.splitlines() if len(ln) > 80 and "/" not in ln]
    assert "log: " in out and (tmp_path / "rep" / "regionkit.log").exists()
