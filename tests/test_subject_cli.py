"""`regionkit subject locate | export | erase` on the real local cluster (moto servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_router_cli import _restore_logging, on_cluster, run  # noqa: F401  (fixtures)

from regions.router import RegionRouter

EU1, EU2, US = "eu-central-1", "eu-west-1", "us-east-1"
SECRET = "anna.secret@example.de"


def _user_with_data(cluster: Any) -> tuple[str, list[str]]:
    router = RegionRouter(cluster.policy, region=EU1, config=cluster.config())
    uid = router.new_user_id(country="DE")
    router.assign_home(uid, country="DE")
    router.put("profile", {"pk": uid, "email": SECRET, "display_name": "Anna"})
    posts = []
    for region in cluster.policy.regions:
        key = f"cli-post-{uid[-8:]}-{region}"
        r = RegionRouter(cluster.policy, region=region, config=cluster.config())
        r.put("content", {"pk": key, "author_id": uid, "body": "hi"})
        posts.append(key)
    assert cluster.replicator.wait_converged(30)
    return uid, posts


@pytest.mark.slow  # the CLI end to end on a 7-region cluster
def test_locate_export_and_erase_through_the_cli(
    on_cluster: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uid, _posts = _user_with_data(on_cluster)
    code, text = run(capsys, "subject", "locate", uid, "--json")
    assert code == 0, text
    located = json.loads(text[text.index("{") :])
    live = [i for i in located["items"] if i["state"] == "live"]
    assert {i["region"] for i in live if i["data_class"] == "content"} == {EU1, EU2, US}
    assert {i["region"] for i in live if i["data_class"] == "profile"} == {EU1, EU2}
    assert uid not in text and SECRET not in text and "cli-post" not in text

    code, text = run(capsys, "subject", "export", uid, "--out", str(tmp_path / "x.json"))
    assert code == 2 and "transfer" in text  # no REGIONKIT_REGION: refused, nothing written
    assert not (tmp_path / "x.json").exists()
    monkeypatch.setenv("REGIONKIT_REGION", EU1)
    code, text = run(capsys, "subject", "export", uid, "--out", str(tmp_path / "x.json"))
    assert code == 0, text
    exported = json.loads((tmp_path / "x.json").read_text())
    assert exported["data"]["profile"][0]["email"] == SECRET
    assert SECRET not in text

    code, text = run(
        capsys, "subject", "erase", uid, "--receipt-dir", str(tmp_path / "r"), "--json"
    )
    assert code == 0, text
    receipt_path = Path(json.loads(text[text.index("[") :])[0]["receipt"])
    receipt = receipt_path.read_text()
    assert uid not in receipt and SECRET not in receipt and "cli-post" not in receipt
    code, text = run(capsys, "audit", "verify", str(receipt_path))
    assert code == 0 and "OK" in text, text
    md = receipt_path.with_suffix(".md").read_text()
    assert "Erasure receipt" in md and "point-in-time-recovery" in md
    code, text = run(capsys, "audit", "verify", str(receipt_path.with_suffix(".md")))
    assert code == 0 and "erasure receipt" in text and "is its markdown" in text, text
    forged = tmp_path / "r" / "forged.md"
    forged.write_text(md.replace("**done**", "**done** (all replicas, backups too)"))
    code, text = run(capsys, "audit", "verify", str(forged))
    assert code == 1 and "does not say what it says" in text, text
    body = json.loads(receipt)
    assert body["kind"] == "regionkit.erasure-receipt/2" and body["pseudonym_key"].startswith("pk-")
    code, text = run(capsys, "subject", "locate", uid, "--json")
    after = json.loads(text[text.index("{") :])
    assert not [i for i in after["items"] if i["state"] == "live"]
    tampered = json.loads(receipt)
    tampered["status"] = "done" if tampered["status"] != "done" else "pending"
    (tmp_path / "t.json").write_text(json.dumps(tampered))
    code, text = run(capsys, "audit", "verify", str(tmp_path / "t.json"))
    assert code == 1


@pytest.mark.slow  # the CLI end to end on a 7-region cluster
def test_the_audit_finds_an_item_of_an_erased_subject_that_came_back(
    on_cluster: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from regions.codec import to_ddb

    uid, _posts = _user_with_data(on_cluster)
    router = RegionRouter(on_cluster.policy, region=EU1, config=on_cluster.config())
    assert router.erase_subject(uid).status == "done"
    out = tmp_path / "a.json"
    args = ("audit", "run", "--checks", "subjects.erasures", "--format", "json", "--no-progress")
    code, text = run(capsys, *args, "--out", str(out))
    report = json.loads(out.read_text())
    mine = [f for f in report["findings"] if f["check_id"] == "subjects.erasures"]
    assert not [f for f in mine if f["status"] != "PASS"], text
    # A writer that bypasses the router puts the profile back, newer than the erasure.
    on_cluster.client(EU2).put_item(
        TableName=on_cluster.table_name("profiles"),
        Item=to_ddb({"pk": uid, "email": SECRET, "rk_v": "ffffffffffff.0000.x.eu-west-1"}),
    )
    code, text = run(capsys, *args, "--out", str(out))
    assert code == 1
    report = json.loads(out.read_text())
    bad = [
        f
        for f in report["findings"]
        if f["check_id"] == "subjects.erasures" and f["status"] == "FAIL"
    ]
    assert EU2 in {f["region"] for f in bad} <= {EU1, EU2}  # and wherever it replicated
    assert all("came back" in f["reason"] and f["severity"] == "high" for f in bad)
    assert SECRET not in out.read_text() and uid not in out.read_text()
