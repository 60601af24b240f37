"""The policy model: the example policies, derived views, explanations, and YAML round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso3166 import countries_by_alpha2
from pydantic import ValidationError

from residency.aws_regions import AWS_REGIONS, distance_km
from residency.errors import PolicyError, UnknownCountry, UnknownDataClass, UnknownRegion
from residency.explain import explain_country, failover_chain
from residency.policy import AuditRequirements as Audit
from residency.policy import (
    DrillTargets,
    GlobalDataClass,
    Jurisdiction,
    MergeConflicts,
    PinnedDataClass,
    Policy,
    SystemTables,
    Targets,
    dump_policy,
    load_policy,
    parse_policy,
    parse_policy_text,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))


@pytest.fixture(scope="module")
def social() -> Policy:
    return load_policy(ROOT / "policies" / "social-network.yaml")


@pytest.fixture(scope="module")
def minimal() -> Policy:
    return load_policy(ROOT / "policies" / "minimal.yaml")


# --- the example policies ------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_policies_validate(path: Path) -> None:
    policy = load_policy(path)
    assert policy.name == path.stem
    # the loader and plain-data validation agree
    assert parse_policy(yaml.safe_load(path.read_text(encoding="utf-8"))) == policy


def test_examples_are_what_the_docs_say(social: Policy) -> None:
    assert set(social.jurisdictions) == {"IN", "BR", "EU", "US"}
    assert social.default_jurisdiction == "US"
    assert len(social.regions) == 7
    assert isinstance(social.data_class("profile"), PinnedDataClass)
    reactions = social.data_class("reactions")
    assert isinstance(reactions, GlobalDataClass)
    assert reactions.conflicts == MergeConflicts(merge="regions.merges:merge_counters")
    assert social.data_class("content").conflicts == "lww"  # type: ignore[union-attr]
    # the quoted "NO" stays Norway, not the boolean false
    assert "NO" in social.jurisdictions["EU"].countries


def test_model_is_immutable(social: Policy) -> None:
    with pytest.raises(ValidationError):
        social.name = "other"  # type: ignore[misc]


def test_model_validation_runs_the_semantic_checks_too(minimal: Policy) -> None:
    """Code that builds a Policy without the loader gets the same cross-field checks."""
    data = minimal.model_dump()
    data["regions"] = [*data["regions"], "us-west-2"]  # in no jurisdiction
    with pytest.raises(ValidationError, match="belongs to no jurisdiction"):
        Policy.model_validate(data)


def test_parse_policy_without_marks_has_no_line() -> None:
    data = yaml.safe_load((ROOT / "policies" / "minimal.yaml").read_text(encoding="utf-8"))
    data["owner"] = "x"
    with pytest.raises(PolicyError) as info:
        parse_policy(data, source="inline")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("inline", None, "owner")
    assert str(problem).startswith("inline: owner: unknown key 'owner'")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    (problem,) = info.value.problems
    assert problem.file == str(missing)
    assert "cannot read the file" in problem.message
    assert "REGIONKIT_POLICY" in problem.fix


def test_every_problem_is_reported_at_once() -> None:
    text = (ROOT / "policies" / "minimal.yaml").read_text(encoding="utf-8")
    text = text.replace("name: minimal", "name: minimal\nowner: me").replace(
        "rto_seconds: 30", "rto_seconds: -1"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source="two.yaml")
    fields = {p.field for p in info.value.problems}
    assert fields == {"owner", "targets.drills.rto_seconds"}


def test_reserved_names_and_anonymized_keys_are_refused() -> None:
    """A class keyed by ``rk_del`` broke every write; anonymizing a key attribute left an
    erasure pending for ever (review findings). Both are refused at load, with the field."""
    text = (ROOT / "policies" / "social-network.yaml").read_text(encoding="utf-8")
    keyed = text.replace(
        "    table: profiles\n    partition_key: pk",
        "    table: profiles\n    partition_key: rk_del",
    )
    assert keyed != text
    with pytest.raises(PolicyError) as info:
        parse_policy_text(keyed, source="reserved.yaml")
    (problem,) = info.value.problems
    assert problem.field == "data_classes.profile.partition_key" and problem.line
    assert "regionkit's own" in problem.message
    anonymize = text.replace(
        "erasure: {action: delete}", "erasure: {action: anonymize, attributes: [body, pk]}"
    )
    assert anonymize != text
    with pytest.raises(PolicyError) as info:
        parse_policy_text(anonymize, source="anon.yaml")
    (problem,) = info.value.problems
    assert problem.field == "data_classes.content.erasure.attributes.1"
    assert "key attribute" in problem.message
    for version in ("true", "1.0"):  # both equal 1 in Python; neither is the version 1
        with pytest.raises(PolicyError) as info:
            parse_policy_text(text.replace("version: 1", f"version: {version}", 1), source="v")
        assert info.value.problems[0].field == "version"


# --- derived views ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "jurisdiction"),
    [
        ("IN", "IN"),
        ("BR", "BR"),
        ("DE", "EU"),
        ("NO", "EU"),
        ("US", "US"),
        ("NG", "US"),
        ("de", "EU"),
        (" fr ", "EU"),
    ],
)
def test_jurisdiction_of_country(social: Policy, country: str, jurisdiction: str) -> None:
    assert social.jurisdiction_of_country(country) == jurisdiction


@pytest.mark.parametrize("country", ["UK", "XX", "DEU", ""])
def test_jurisdiction_of_country_refuses_non_iso_codes(social: Policy, country: str) -> None:
    # silently homing a typo in the default jurisdiction would break residency
    with pytest.raises(UnknownCountry):
        social.jurisdiction_of_country(country)


def test_jurisdiction_of_region(social: Policy) -> None:
    assert social.jurisdiction_of_region("ap-south-2") == "IN"
    assert social.jurisdiction_of_region("us-west-2") == "US"
    with pytest.raises(UnknownRegion, match=r"ap-northeast-1.*known: ap-south-1, ap-south-2"):
        social.jurisdiction_of_region("ap-northeast-1")


def test_check_region(social: Policy) -> None:
    assert social.check_region("sa-east-1") == "sa-east-1"
    with pytest.raises(UnknownRegion) as info:
        social.check_region("eu-west-3")
    assert info.value.region == "eu-west-3"  # type: ignore[attr-defined]


def test_allowed_regions(social: Policy) -> None:
    assert social.allowed_regions("profile", "IN") == ["ap-south-1", "ap-south-2"]
    assert social.allowed_regions("profile", "BR") == ["sa-east-1"]
    assert social.allowed_regions("content") == social.data_class("content").replicas  # type: ignore[union-attr]
    assert len(social.allowed_regions("directory")) == 7
    with pytest.raises(ValueError, match="jurisdiction"):
        social.allowed_regions("profile")
    with pytest.raises(UnknownDataClass, match="profile, content, reactions, directory"):
        social.allowed_regions("photos")


def test_pinned_placements(social: Policy) -> None:
    assert social.pinned_placements("profile") == {
        "IN": ["ap-south-1", "ap-south-2"],
        "BR": ["sa-east-1"],
        "EU": ["eu-central-1", "eu-west-1"],
        "US": ["us-east-1", "us-west-2"],
    }


def test_table_placements(social: Policy) -> None:
    placements = social.table_placements()
    assert set(placements) == {
        "profiles",
        "content",
        "reactions",
        "directory",
        "regionkit-conflicts",
        "regionkit-lineage",
    }
    # the pinned table exists in every region (each jurisdiction's items stay in its own)
    assert sorted(placements["profiles"]) == sorted(social.regions)
    assert sorted(placements["regionkit-conflicts"]) == sorted(social.regions)
    # the detectors' lineage table: wherever a global class has a replica
    replicated = {r for n in ("content", "reactions", "directory") for r in placements[n]}
    assert set(placements["regionkit-lineage"]) == replicated
    assert placements["content"] == social.data_class("content").replicas  # type: ignore[union-attr]


def test_table_placements_follow_replicas(minimal: Policy) -> None:
    data = minimal.model_dump()
    data["data_classes"]["content"]["replicas"] = ["us-east-1"]
    p = Policy.model_validate(data)
    assert p.table_placements()["content"] == ["us-east-1"]


def test_nearest_first(social: Policy) -> None:
    everywhere = list(social.regions)
    assert social.nearest_first("eu-west-1", everywhere)[:3] == [
        "eu-west-1",
        "eu-central-1",
        "us-east-1",
    ]
    assert social.nearest_first("ap-south-1", everywhere)[:2] == ["ap-south-1", "ap-south-2"]
    ordered = social.nearest_first("sa-east-1", everywhere)
    distances = [distance_km("sa-east-1", r) for r in ordered]
    assert distances == sorted(distances)
    assert sorted(ordered) == sorted(everywhere)


def test_nearest_first_keeps_policy_order_on_ties(social: Policy) -> None:
    # the same region twice is the only exact tie: both stay, in the given order
    assert social.nearest_first("us-east-1", ["us-west-2", "us-east-1", "us-west-2"]) == [
        "us-east-1",
        "us-west-2",
        "us-west-2",
    ]


def test_pii_attributes(social: Policy, minimal: Policy) -> None:
    assert social.pii_attributes() == frozenset(
        {"email", "phone", "display_name", "birth_date", "address"}
    )
    assert minimal.pii_attributes() == frozenset({"email", "display_name"})


# --- explain ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "jurisdiction", "by_default"),
    [
        ("IN", "IN", False),
        ("BR", "BR", False),
        ("DE", "EU", False),
        ("US", "US", False),
        ("NG", "US", True),
    ],
)
def test_explain_country(social: Policy, country: str, jurisdiction: str, by_default: bool) -> None:
    ex = explain_country(social, country)
    j = social.jurisdictions[jurisdiction]
    assert (ex.country, ex.jurisdiction, ex.by_default, ex.law) == (
        country,
        jurisdiction,
        by_default,
        j.law,
    )
    assert ex.home_regions == j.home_regions
    by_name = {dc.data_class: dc for dc in ex.data_classes}
    assert list(by_name) == list(social.data_classes)

    profile = by_name["profile"]
    chain = [step.region for step in profile.chain]
    assert chain[: len(j.home_regions)] == j.home_regions  # home first, in failover order
    assert set(chain) == set(j.regions)  # every region of the jurisdiction, and no other
    assert chain[0] == j.home_regions[0] and profile.chain[0].reason == "home region"

    for name in ("content", "reactions", "directory"):
        dc = by_name[name]
        regions = [step.region for step in dc.chain]
        assert sorted(regions) == sorted(social.data_class(name).replicas)  # type: ignore[union-attr]
        assert regions[0] == j.home_regions[0]  # every global table has a home replica
        assert "no replica left" in dc.stop


def test_single_region_jurisdiction_has_no_compliant_failover(social: Policy) -> None:
    profile = explain_country(social, "BR", ["profile"]).data_classes[0]
    assert [s.region for s in profile.chain] == ["sa-east-1"]
    assert "no compliant failover" in profile.stop


def test_multi_region_jurisdiction_stops_at_the_border(social: Policy) -> None:
    profile = explain_country(social, "IN", ["profile"]).data_classes[0]
    assert [s.region for s in profile.chain] == ["ap-south-1", "ap-south-2"]
    assert "failover inside IN" in profile.chain[1].reason
    assert profile.stop == "no region outside IN may hold profile"


def test_pinned_chain_lists_non_home_regions_last(minimal: Policy) -> None:
    data = minimal.model_dump()
    data["jurisdictions"]["EU"]["home_regions"] = ["eu-west-1"]
    p = Policy.model_validate(data)
    chain = failover_chain(p, "profile", "EU").chain
    assert [s.region for s in chain] == ["eu-west-1", "eu-central-1"]
    assert "last resort" in chain[1].reason


def test_global_chain_when_home_holds_no_replica(minimal: Policy) -> None:
    data = minimal.model_dump()
    data["data_classes"]["content"]["replicas"] = ["us-east-1"]
    p = Policy.model_validate(data)
    (step,) = failover_chain(p, "content", "EU").chain
    assert step.region == "us-east-1"
    assert "nearest to eu-central-1" in step.reason


def test_explain_rejects_unknown_country_and_data_class(social: Policy) -> None:
    with pytest.raises(UnknownCountry, match="'ZZ'"):
        explain_country(social, "ZZ")
    with pytest.raises(UnknownDataClass, match="photos"):
        explain_country(social, "IN", ["photos"])
    assert explain_country(social, "in").jurisdiction == "IN"


# --- property: random valid policies round-trip through YAML ------------------------------

REGION_CODES = sorted(AWS_REGIONS)
COUNTRY_CODES = sorted(countries_by_alpha2)

names = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
table_names = st.from_regex(r"[A-Za-z0-9_.-]{3,24}", fullmatch=True)
jurisdiction_ids = st.from_regex(r"[A-Z][A-Z0-9_]{1,6}", fullmatch=True)
attributes = st.text(min_size=1, max_size=12)
texts = st.text(max_size=40)
positive = st.floats(min_value=0, exclude_min=True, max_value=86_400, allow_nan=False)
function_refs = st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_.]{0,12}:[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    regions = draw(st.lists(st.sampled_from(REGION_CODES), min_size=1, max_size=8, unique=True))

    # split the regions into 1..n non-empty jurisdictions
    shuffled = draw(st.permutations(regions))
    n = draw(st.integers(1, len(regions)))
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(regions) - 1), min_size=n - 1, max_size=n - 1)))
        if n > 1
        else []
    )
    groups = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(regions)], strict=True)]
    jids = draw(st.lists(jurisdiction_ids, min_size=n, max_size=n, unique=True))

    # countries split disjointly between the jurisdictions (some in none: the default's)
    countries = draw(st.lists(st.sampled_from(COUNTRY_CODES), max_size=12, unique=True))
    owner = draw(st.lists(st.integers(0, n), min_size=len(countries), max_size=len(countries)))
    jurisdictions = {
        jid: Jurisdiction(
            law=draw(st.text(min_size=1, max_size=30)),
            countries=[c for c, o in zip(countries, owner, strict=True) if o == k],
            regions=list(group),
            home_regions=draw(st.lists(st.sampled_from(group), min_size=1, unique=True)),
        )
        for k, (jid, group) in enumerate(zip(jids, groups, strict=True))
    }

    class_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    conflict_log = draw(table_names)
    tables = draw(
        st.lists(
            table_names.filter(lambda t: t != conflict_log),
            min_size=len(class_names),
            max_size=len(class_names),
            unique=True,
        )
    )
    directory, *others = class_names
    data_classes: dict[str, PinnedDataClass | GlobalDataClass] = {
        directory: GlobalDataClass(
            kind="global",
            table=tables[0],
            replicas=list(draw(st.permutations(regions))),
            description=draw(texts),
        ),
    }
    for name, table in zip(others, tables[1:], strict=True):
        pk = draw(attributes)
        other_attributes: st.SearchStrategy[str] = attributes.filter(pk.__ne__)
        if draw(st.booleans()):
            data_classes[name] = PinnedDataClass(
                kind="pinned",
                table=table,
                partition_key=pk,
                sort_key=(sk := draw(st.none() | other_attributes)),
                pii_attributes=draw(
                    st.lists(
                        other_attributes.filter(lambda a: a != sk),
                        min_size=1,
                        max_size=4,
                        unique=True,
                    )
                ),
                description=draw(texts),
            )
        else:
            conflicts: Literal["lww"] | MergeConflicts = "lww"
            if draw(st.booleans()):
                conflicts = MergeConflicts(merge=draw(function_refs))
            data_classes[name] = GlobalDataClass(
                kind="global",
                table=table,
                partition_key=pk,
                sort_key=draw(st.none() | other_attributes),
                replicas=draw(st.lists(st.sampled_from(regions), min_size=1, unique=True)),
                conflicts=conflicts,
                description=draw(texts),
            )

    return Policy(
        name=draw(names),
        description=draw(texts),
        regions=regions,
        default_jurisdiction=draw(st.sampled_from(jids)),
        jurisdictions=jurisdictions,
        data_classes=data_classes,
        system=SystemTables(directory=directory, conflict_log_table=conflict_log),
        targets=Targets(
            drills=DrillTargets(
                rto_seconds=draw(positive),
                rpo_seconds=draw(st.just(0.0) | positive),
                convergence_seconds=draw(positive),
                max_age_days=draw(st.integers(1, 3650)),
            ),
            audit=Audit(
                pitr=draw(st.booleans()),
                customer_managed_kms=draw(st.booleans()),
                deletion_protection=draw(st.booleans()),
                streams=draw(st.booleans()),
            ),
            replication_latency_alarm_ms=draw(st.integers(1, 10**7)),
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_yaml_round_trip(policy: Policy) -> None:
    text = dump_policy(policy)
    # random 'module:function' references: the structure round-trips, nothing is imported
    again = parse_policy_text(text, source="generated.yaml", merge_modules=None)
    assert again == policy
    assert dump_policy(again) == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.sampled_from(COUNTRY_CODES))
def test_pinned_data_never_leaves_the_jurisdiction(policy: Policy, country: str) -> None:
    ex = explain_country(policy, country)
    allowed = set(policy.jurisdictions[ex.jurisdiction].regions)
    for dc in ex.data_classes:
        if dc.kind == "pinned":
            assert {s.region for s in dc.chain} == allowed
            assert dc.chain[0].region == policy.jurisdictions[ex.jurisdiction].home_regions[0]
            assert set(policy.allowed_regions(dc.data_class, ex.jurisdiction)) == allowed
        else:
            assert {s.region for s in dc.chain} == set(dc.regions)
