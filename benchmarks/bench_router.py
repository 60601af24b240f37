"""The region router's cost: cached decisions, routed reads and writes, threads.

(a) A cached route decision (the directory entry and the health state in memory),
    for a pinned class (``profile``: directory cache + jurisdiction chain) and a
    global one (``content``: nearest replica), beside a plain dict lookup in the
    same run. Calls are timed in batches (``perf_counter_ns`` around 1,000 calls,
    divided), so the timer's own cost does not dominate; the figures are the
    median and the 99th percentile of those per-call batch means.
    Goal: median <= 1 us for both classes.

(b) Routed ``put`` and ``get`` through the router against the raw boto3 client, on
    the same in-process moto table (``mock_aws``), the same number of calls,
    interleaved call by call (the order rotating) and each call timed on its own,
    so that background load hits every variant alike. The figures are medians per
    call; the goal is checked on the ratio of medians (the ratio of totals, more
    sensitive to outliers, is printed beside it). The router's ``put`` is stamped
    and conditional, so two ratios are reported:

    * vs a raw put sending the *same* request (same item attributes, stamp and
      version vector included, same ConditionExpression): the router's own
      overhead (routing, stamping, serialization, failover bookkeeping);
    * vs a plain unconditional raw put of the bare item: what the stamped,
      conditional write costs in all.

    Goal: ratio <= 1.05 (against the same request). The router's own work per call
    is also measured without moto (the same calls against a stub client).

(c) Decisions per second from 8 threads sharing one router, beside one thread.

    python benchmarks/bench_router.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regions.directory import DirectoryEntry  # noqa: E402
from regions.ids import mint_user_id  # noqa: E402
from regions.pool import ClientPool  # noqa: E402
from regions.router import RegionRouter  # noqa: E402
from residency.policy import Policy, load_policy  # noqa: E402
from residency.settings import RouterConfig  # noqa: E402

GOAL_DECISION_NS = 1_000.0
GOAL_RATIO = 1.05
REGION = "eu-west-1"


class _NoClients:
    """For decisions only: any request would be a bug in the benchmark."""

    def client(self, service: str, region: str) -> Any:
        raise AssertionError(f"a cached decision sent a request to {service} in {region}")


def _settings() -> RouterConfig:
    # endpoints={} explicitly: a local-cluster state file in the working directory must
    # not point this in-process benchmark at running servers.
    return RouterConfig(mode="aws", endpoints={}, region=REGION, directory_cache_size=200_000)


def _users(policy: Policy, router: RegionRouter, n: int) -> list[str]:
    """n users spread over every jurisdiction, their directory entries cached."""
    jids = list(policy.jurisdictions)
    out = []
    for i in range(n):
        jid = jids[i % len(jids)]
        home = policy.jurisdictions[jid].home_regions[0]
        uid = mint_user_id(home)
        router.directory.put(DirectoryEntry(uid, home, jid))
        out.append(uid)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _warm_up(variants: Mapping[str, Callable[[], object]], times: int) -> None:
    """Call every variant ``times`` times, untimed."""
    for fn in variants.values():
        for _ in range(times):
            fn()


# --- (a) cached decisions ----------------------------------------------------------------


def _decision_variants(
    router: RegionRouter, ids: list[str], table: dict[str, int]
) -> dict[str, Callable[[], int]]:
    """One batch per variant: a decision (or a dict lookup) for every id; each returns its ns."""
    route = router.route
    clock = time.perf_counter_ns

    def pinned() -> int:
        t0 = clock()
        for uid in ids:
            route("profile", uid)
        return clock() - t0

    def global_() -> int:
        t0 = clock()
        for _ in ids:
            route("content")
        return clock() - t0

    def global_subject() -> int:
        t0 = clock()
        for uid in ids:
            route("content", uid)
        return clock() - t0

    def dict_lookup() -> int:
        t0 = clock()
        for uid in ids:
            table[uid]  # the lookup is the point
        return clock() - t0

    variants: dict[str, Callable[[], int]] = {
        "pinned (profile)": pinned,
        "global (content)": global_,
        "global with subject": global_subject,
        "dict lookup": dict_lookup,
    }
    return variants


def _batch_means(
    variants: dict[str, Callable[[], int]], batches: int, size: int
) -> dict[str, list[float]]:
    """Per variant, the ns per call of each batch, the variants interleaved batch by batch."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(batches):  # interleaved, so drift and noise hit all alike
        for name, fn in variants.items():
            samples[name].append(fn() / size)
    return samples


def bench_decisions(policy: Policy, batches: int, size: int) -> dict[str, tuple[float, float]]:
    router = RegionRouter(policy, clients=_NoClients(), config=_settings())
    ids = _users(policy, router, size)
    table = {uid: i for i, uid in enumerate(ids)}
    variants = _decision_variants(router, ids, table)
    _warm_up(variants, 20)
    samples = _batch_means(variants, batches, size)
    hits_before = router.directory.hits
    variants["pinned (profile)"]()
    assert router.directory.hits - hits_before == size  # every decision was a cache hit
    return {name: (statistics.median(v), _pct(v, 0.99)) for name, v in samples.items()}


# --- (b) routed reads and writes vs raw boto3 ------------------------------------------------


class _Capture:
    """A client that records the put_item request it is sent, and answers at once."""

    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.sent = kwargs
        return {}


def _captured_put(policy: Policy, body: str) -> dict[str, Any]:
    """The put_item request router.put sends for a new content item."""
    capture = _Capture()

    class Provider:
        def client(self, service: str, region: str) -> Any:
            return capture

    router = RegionRouter(policy, clients=Provider(), config=_settings())
    router.put("content", {"pk": "template", "body": body})
    assert capture.sent.get("ConditionExpression"), "router.put sent no condition"
    return capture.sent


def _create_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _moto_environment() -> None:
    """Fake credentials and no account-id endpoints for in-process moto (unless already set)."""
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(k, v)


def _io_variants(
    policy: Policy, router: RegionRouter, client: Any, table: str, calls: int
) -> dict[str, Callable[[], None]]:
    """The routed and raw puts and gets to compare, on ``table`` (its read keys written)."""
    body = "x" * 200
    counter = iter(range(10**9))

    def router_put() -> None:
        router.put("content", {"pk": f"r{next(counter)}", "body": body})

    template = _captured_put(policy, body)

    def raw_same_put() -> None:
        # Exactly what the router sends (captured from router.put once, before timing:
        # stamp, version vector, every attribute, the condition), under a new key.
        item = dict(template["Item"])
        item["pk"] = {"S": f"s{next(counter)}"}
        client.put_item(**{**template, "TableName": table, "Item": item})

    def raw_plain_put() -> None:
        k = f"p{next(counter)}"
        client.put_item(TableName=table, Item={"pk": {"S": k}, "body": {"S": body}})

    read_keys = [f"g{i}" for i in range(calls)]
    for k in read_keys:
        router.put("content", {"pk": k, "body": body})
    reads = iter(range(10**9))

    def router_get() -> None:
        router.get("content", {"pk": read_keys[next(reads) % calls]})

    def raw_get() -> None:
        client.get_item(TableName=table, Key={"pk": {"S": read_keys[next(reads) % calls]}})

    variants: dict[str, Callable[[], None]] = {
        "router put": router_put,
        "raw put, same request": raw_same_put,
        "raw put, plain": raw_plain_put,
        "router get": router_get,
        "raw get": raw_get,
    }
    return variants


def _time_each_call(
    variants: dict[str, Callable[[], None]], rounds: int, calls: int
) -> dict[str, list[float]]:
    """Per variant, the ns of each call, the variants interleaved call by call."""
    # Interleaved call by call (rotating who goes first), each call timed on its own:
    # a 1-2 ms call dwarfs the timer, and load changes on a busy machine hit every
    # variant alike instead of whichever block happened to run then.
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    clock = time.perf_counter_ns
    for r in range(rounds):
        gc.collect()
        for i in range(calls):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                fn = variants[name]
                t0 = clock()
                fn()
                per_call[name].append(clock() - t0)
    return per_call


def bench_io(policy: Policy, rounds: int, calls: int) -> dict[str, Any]:
    _moto_environment()
    from moto import mock_aws

    with mock_aws():
        settings = _settings()
        pool = ClientPool(settings)
        router = RegionRouter(policy, clients=pool, config=settings)
        client = pool.client("dynamodb", REGION)  # the very client the router uses
        table = settings.table_name(policy.data_classes["content"].table)
        _create_table(client, table)
        variants = _io_variants(policy, router, client, table, calls)
        _warm_up(variants, max(20, calls // 10))  # botocore's caches, moto's code paths
        created = pool.created
        per_call = _time_each_call(variants, rounds, calls)
        assert pool.created == created, "a client was built after warm-up"

        in_situ = _in_situ(policy, settings, client, table, calls)

        def ratio(a: str, b: str) -> tuple[float, float]:
            med = statistics.median(per_call[a]) / statistics.median(per_call[b])
            return med, sum(per_call[a]) / sum(per_call[b])

        return {
            "median_us": {n: statistics.median(v) / 1000 for n, v in per_call.items()},
            "ratios": {
                "put_same": ratio("router put", "raw put, same request"),
                "put_plain": ratio("router put", "raw put, plain"),
                "get": ratio("router get", "raw get"),
            },
            "calls": rounds * calls,
            "clients_built": pool.created,
            "in_situ_us": in_situ,
        }


class _Timed:
    """Forwards to a real client, noting when each call went in and came back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.went_in = self.came_back = 0

    def put_item(self, **kwargs: Any) -> Any:
        self.went_in = time.perf_counter_ns()
        out = self.client.put_item(**kwargs)
        self.came_back = time.perf_counter_ns()
        return out

    def get_item(self, **kwargs: Any) -> Any:
        self.went_in = time.perf_counter_ns()
        out = self.client.get_item(**kwargs)
        self.came_back = time.perf_counter_ns()
        return out


def _in_situ(
    policy: Policy, settings: RouterConfig, client: Any, table: str, calls: int
) -> dict[str, float]:
    """The router's own time around real moto calls (before the client call + after it), us.

    Unlike a stub client in a tight loop, this includes the cold caches a real call
    leaves behind.
    """
    timed = _Timed(client)

    class Provider:
        def client(self, service: str, region: str) -> Any:
            return timed

    router = RegionRouter(policy, clients=Provider(), config=settings)
    body = "x" * 200
    out: dict[str, float] = {}
    for name, fn in (
        ("put", lambda i: router.put("content", {"pk": f"t{i}", "body": body})),
        ("get", lambda i: router.get("content", {"pk": f"t{i}"})),
    ):
        own = []
        for i in range(calls * 2):
            t0 = time.perf_counter_ns()
            fn(i)
            t1 = time.perf_counter_ns()
            own.append((timed.went_in - t0) + (t1 - timed.came_back))
        out[name] = statistics.median(own) / 1000
    return out


class _StubClient:
    """Answers at once, so what is left is the router's own work per call."""

    def __init__(self, item: dict[str, Any]) -> None:
        self._item = item

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        return {"Item": self._item}


def bench_own_cost(policy: Policy, calls: int) -> dict[str, float]:
    """The router's own cost per put and get, in us: the same calls against a stub client."""
    stamp = "019b76daa800.0001." + REGION
    item = {
        "pk": {"S": "k"},
        "body": {"S": "x" * 200},
        "rk_v": {"S": stamp},
        "rk_vv": {"M": {REGION: {"S": stamp}}},
    }
    stub = _StubClient(item)

    class Provider:
        def client(self, service: str, region: str) -> Any:
            return stub

    router = RegionRouter(policy, clients=Provider(), config=_settings())
    body = "x" * 200
    out: dict[str, float] = {}
    for name, fn in (
        ("put", lambda i: router.put("content", {"pk": f"k{i}", "body": body})),
        ("get", lambda i: router.get("content", {"pk": f"k{i}"})),
    ):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for i in range(calls):
                fn(i)
            runs.append((time.perf_counter_ns() - t0) / calls / 1000)
        out[name] = statistics.median(runs)
    return out


# --- (c) decisions from threads -----------------------------------------------------------------


def bench_threads(policy: Policy, threads: int, per_thread: int) -> dict[str, float]:
    router = RegionRouter(policy, clients=_NoClients(), config=_settings())
    ids = _users(policy, router, 1000)
    errors: list[BaseException] = []

    def work(barrier: threading.Barrier) -> None:
        route = router.route
        barrier.wait()
        try:
            for i in range(per_thread):
                uid = ids[i % 1000]
                route("profile", uid)
                route("content")
        except BaseException as exc:
            errors.append(exc)

    out: dict[str, float] = {}
    for n in (1, threads):
        barrier = threading.Barrier(n + 1)
        ts = [threading.Thread(target=work, args=(barrier,)) for _ in range(n)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        out[f"{n} thread{'s' if n > 1 else ''}"] = n * per_thread * 2 / wall
    if errors:
        raise errors[0]
    return out


# --- (e) a feed page and a batch get, routed vs raw ------------------------------------------


def bench_feed(rounds: int, calls: int) -> dict[str, float]:
    """``router.query`` (limit 20, a cursor) and ``router.batch_get`` of 50 posts against the
    raw boto3 requests they send, on the same in-process moto tables, interleaved."""
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    from moto import mock_aws

    from regions.codec import to_ddb
    from regions.local.sim import create_tables

    feed_policy = load_policy(ROOT / "policies" / "feed.yaml")
    with mock_aws():
        settings = _settings()
        pool = ClientPool(settings)
        create_tables(feed_policy, pool)
        router = RegionRouter(feed_policy, clients=pool, config=settings)
        client = pool.client("dynamodb", REGION)
        for i in range(60):
            router.put("feed", {"pk": "reader", "sk": f"{i:04d}", "post": f"p{i}"})
            router.put("posts", {"pk": f"p{i}", "body": "x" * 200})
        first = router.query("feed", "reader", descending=True, limit=20)
        raw_page: dict[str, Any] = {
            "TableName": "feed",
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": "pk"},
            "ExpressionAttributeValues": {":pk": {"S": "reader"}},
            "ScanIndexForward": False,
            "ConsistentRead": False,
            "Limit": 20,
        }
        raw_next = {**raw_page, "ExclusiveStartKey": client.query(**raw_page)["LastEvaluatedKey"]}
        keys = [{"pk": f"p{i}"} for i in range(50)]
        raw_keys = {"posts": {"Keys": [to_ddb(k) for k in keys], "ConsistentRead": False}}
        variants: dict[str, Callable[[], Any]] = {
            "routed page": lambda: router.query(
                "feed", "reader", descending=True, limit=20, cursor=first.cursor
            ),
            "raw page": lambda: client.query(**raw_next),
            "routed batch get 50": lambda: router.batch_get("posts", keys),
            "raw batch get 50": lambda: client.batch_get_item(RequestItems=raw_keys),
        }
        samples: dict[str, list[float]] = {n: [] for n in variants}
        for _ in range(rounds):
            for _ in range(calls):
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
    return {n: statistics.median(v) * 1e6 for n, v in samples.items()}


# --- (d) what the residency protocol costs, in requests ----------------------------------------


def bench_protocol_requests(policy: Policy) -> dict[str, int]:
    """Requests each operation sends, counted on the wire (in-process moto, a counting
    event hook on every client): the fence is part of each write's own condition."""
    from regions.local.sim import simulation

    counts: dict[str, int] = {}
    with simulation(policy, seed=1, detect=False) as sim:
        sent: list[str] = []
        for region in policy.regions:
            sim.clients.client("dynamodb", region).meta.events.register(
                "before-send.dynamodb.*", lambda request, **kw: sent.append(request.url)
            )
        eu = sim.routers["eu-central-1"]

        def count(name: str, fn: Callable[[], Any]) -> None:
            before = len(sent)
            fn()
            counts[name] = len(sent) - before

        uid = eu.new_user_id(country="DE")
        count("sign-up (assign_home)", lambda: eu.assign_home(uid, country="DE"))
        count("profile put (fence in the condition)", lambda: eu.put("profile", {"pk": uid}))
        count("profile get, directory cached", lambda: eu.get("profile", {"pk": uid}))
        other = sim.routers["us-east-1"]
        count("profile get, directory cache miss", lambda: other.get("profile", {"pk": uid}))
        count(
            "move to another jurisdiction (2 old regions)", lambda: eu.move_user(uid, country="US")
        )
        count("stale-cache write that follows the fence", lambda: other.put("profile", {"pk": uid}))
        count("content put with a PII check", lambda: eu.put("content", {"pk": "c", "b": 1}))
    return counts


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=str(ROOT / "policies" / "social-network.yaml"))
    ap.add_argument("--batches", type=int, default=2000, help="Decision batches per variant.")
    ap.add_argument("--batch-size", type=int, default=1000, help="Decisions per batch.")
    ap.add_argument("--rounds", type=int, default=5, help="Interleaved I/O rounds.")
    ap.add_argument("--calls", type=int, default=400, help="Calls per variant per round.")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="Fewer samples (a smoke run).")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.rounds, args.calls = 200, 3, 100
    policy = load_policy(args.policy)
    print(f"python {sys.version.split()[0]}, policy {policy.name!r}, router region {REGION}")
    misses = 0

    print(f"\n(a) cached route decision: {args.batches} batches of {args.batch_size} calls")
    print(f"    {'':24} {'median':>10} {'p99':>10}   (ns per call; p99 of batch means)")
    decisions = bench_decisions(policy, args.batches, args.batch_size)
    base = decisions["dict lookup"][0]
    for name, (med, p99) in decisions.items():
        ratio = "" if name == "dict lookup" else f"   {med / base:5.1f}x a dict lookup"
        print(f"    {name:24} {med:10.0f} {p99:10.0f}{ratio}")
    for name in ("pinned (profile)", "global (content)"):
        med = decisions[name][0]
        ok = med <= GOAL_DECISION_NS
        misses += not ok
        print(
            f"    {'PASS' if ok else 'MISS'}: {name} median {med:.0f} ns "
            f"(goal <= {GOAL_DECISION_NS:.0f} ns)"
        )

    print(
        f"\n(b) routed I/O vs raw boto3 on in-process moto: {args.rounds} rounds x "
        f"{args.calls} calls per variant, interleaved call by call"
    )
    io = bench_io(policy, args.rounds, args.calls)
    for name, us in io["median_us"].items():
        print(f"    {name:24} {us:8.1f} us per call (median)")
    ratios = {k: v[0] for k, v in io["ratios"].items()}
    print(f"    {'ratio':40} {'of medians':>10} {'of totals':>10}")
    for label, key in (
        ("put vs raw put, same conditional request", "put_same"),
        ("put vs raw put, plain unconditional", "put_plain"),
        ("get vs raw get", "get"),
    ):
        med, tot = io["ratios"][key]
        print(f"    {label:40} {med:10.3f} {tot:10.3f}")
    own = bench_own_cost(policy, 5_000 if args.quick else 20_000)
    raw_put = io["median_us"]["raw put, same request"]
    raw_get = io["median_us"]["raw get"]
    print(
        f"    the router's own work (same calls, stub client): put {own['put']:.1f} us "
        f"(= {own['put'] / raw_put:.1%} of a raw in-process moto put), "
        f"get {own['get']:.1f} us (= {own['get'] / raw_get:.1%} of a raw get)"
    )
    situ = io["in_situ_us"]
    print(
        f"    the router's own time around real moto calls (in situ): put {situ['put']:.1f} us "
        f"(= {situ['put'] / raw_put:.1%}), get {situ['get']:.1f} us (= {situ['get'] / raw_get:.1%})"
    )
    print(f"    clients built: {io['clients_built']} (none after warm-up)")
    for label, ratio in (("put (same request)", ratios["put_same"]), ("get", ratios["get"])):
        ok = ratio <= GOAL_RATIO
        misses += not ok
        print(
            f"    {'PASS' if ok else 'MISS'}: {label} ratio {ratio:.3f} "
            f"(ratio of medians; goal <= {GOAL_RATIO})"
        )
    print(
        f"    (info) put vs a plain put: {ratios['put_plain']:.3f}; the stamp, version vector "
        "and condition are what never overwriting a newer write costs"
    )

    per_thread = max(10_000, args.batches * 50)
    print(f"\n(c) decisions per second (profile + content), {per_thread * 2:,} per thread")
    rates = bench_threads(policy, args.threads, per_thread)
    one = rates["1 thread"]
    for name, rate in rates.items():
        print(f"    {name:12} {rate / 1e6:6.2f} M decisions/s ({rate / one:.2f}x one thread)")
    print("    (one router shared by all threads; the GIL serializes pure-Python decisions)")

    print("\n(e) a feed page (limit 20, a cursor) and a batch get of 50, routed vs raw boto3")
    feed = bench_feed(args.rounds, max(20, args.calls // 4))
    for name, us in feed.items():
        print(f"    {name:24} {us:8.1f} us per call (median)")
    for label, a, b in (
        ("feed page", "routed page", "raw page"),
        ("batch get 50", "routed batch get 50", "raw batch get 50"),
    ):
        ratio = feed[a] / feed[b]
        ok = ratio <= GOAL_RATIO
        misses += not ok
        print(f"    {'PASS' if ok else 'MISS'}: {label} ratio {ratio:.3f} (goal <= {GOAL_RATIO})")

    print("\n(d) the residency protocol's cost, in requests sent (counted on the wire)")
    for name, n in bench_protocol_requests(policy).items():
        print(f"    {name:48} {n:3d}")
    print("    (a write costs no extra request: the move/erase fence is in its own condition)")

    print(f"\n{'PASS' if not misses else 'MISS'}: {misses} goal(s) missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
