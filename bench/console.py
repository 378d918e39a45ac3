"""`python -m bench console [--rows N] [--keep]` (or `make bench ARGS="console"`): the console's pages
over a big ledger.

Fills a fresh SQLite instance with N ledger rows (1,000,000 by default: two orgs, 200 users, 20
apps, 8 models on 3 providers, spread over 30 days, 2% failed), their usage and party rollups and
error reports, with bulk inserts; then times, in-process through the Flask app (the WSGI layer
included, no network), Home (every org and one org), its live partial, Per-user usage, Error
reports and Gateway logs filtered by user, and the activity export of the biggest org (every row):
time to its first bytes, total time, rows per second and the process's resident memory sampled
while it streams. Goal: every page under 300 ms; the export's memory flat.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "console.json"
MODELS = [f"bench/model-{i}" for i in range(8)]
PROVIDERS = ["alpha", "beta", "gamma"]
GOAL_MS = 300.0


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def config() -> dict:
    return {
        "providers": [{"name": p, "kind": "openai", "base_url": f"http://127.0.0.1:9/{p}/v1", "api_key": "sk-bench",
                       "allow_private": True} for p in PROVIDERS],
        "models": [{"slug": m, "routes": [{"provider": PROVIDERS[i % 3], "upstream_model": f"up-{i}",
                                           "input_per_mtok": 1, "output_per_mtok": 2}]} for i, m in enumerate(MODELS)],
    }


def fill(conn, rows: int, orgs: list[int], users: dict[int, list[int]], apps: dict[int, list[int]],
         keys: dict[int, int], log) -> None:
    """Bulk insert `rows` ledger rows (95% in the first org), then their rollups and error reports in
    SQL (one pass each, as the writer would have added them batch by batch)."""
    r = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(days=30)
    step = (now - start) / rows
    cols = ("request_id", "org_id", "key_id", "user_id", "app_id", "endpoint", "requested_model", "model",
            "provider", "upstream_model", "stream", "input_tokens", "output_tokens", "cached_tokens",
            "cache_write_tokens", "usage_estimated", "benchmark_micros", "charge_micros", "saved_micros", "saved_by",
            "cache", "status", "error_type", "error_message", "latency_ms", "ttfb_ms", "attempts", "byok", "created_at")
    sql = f"INSERT INTO ledger_entry ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.exec_driver_sql("PRAGMA synchronous=OFF")
    batch = []
    began = time.perf_counter()
    for i in range(rows):
        org = orgs[0] if r.random() < 0.95 else orgs[1]
        m = r.randrange(len(MODELS))
        failed = r.random() < 0.02
        inp, out = r.randint(50, 4000), 0 if failed else r.randint(10, 800)
        bench_micros = inp + 2 * out
        charge = 0 if failed else int(bench_micros * r.choice((1, 1, 1, 0.6)))
        batch.append((f"req_{i:012x}", org, keys[org], r.choice(users[org]), r.choice(apps[org]) if r.random() < .5
                      else None, "chat.completions", MODELS[m], MODELS[m], PROVIDERS[m % 3], f"up-{m}", 0, inp, out,
                      0, 0, 0, bench_micros, charge, bench_micros - charge if not failed else 0, "", "miss",
                      r.choice((429, 500, 502)) if failed else 200, "api_error" if failed else None,
                      "upstream failed" if failed else None, r.randint(80, 3000), None, 1, 0,
                      (start + step * i).strftime("%Y-%m-%d %H:%M:%S.%f")))
        if len(batch) == 50_000:
            conn.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        conn.exec_driver_sql(sql, batch)
    log(f"  {rows:,} ledger rows in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)"
    sums = ("count(*), sum(status >= 400), sum(input_tokens), sum(output_tokens), sum(benchmark_micros), "
            "sum(charge_micros), sum(saved_micros)")
    into = "requests, errors, input_tokens, output_tokens, benchmark_micros, charge_micros, saved_micros"
    conn.exec_driver_sql(f"INSERT INTO usage_rollup (org_id, hour, model, mechanism, {into}) "
                         f"SELECT org_id, {hour}, requested_model, '', {sums} FROM ledger_entry "
                         f"GROUP BY org_id, {hour}, requested_model")
    for party, column in (("key", "key_id"), ("user", "user_id"), ("app", "app_id")):
        conn.exec_driver_sql(f"INSERT INTO party_rollup (org_id, hour, party, party_id, {into}) "
                             f"SELECT org_id, {hour}, '{party}', {column}, {sums} FROM ledger_entry "
                             f"WHERE {column} IS NOT NULL GROUP BY org_id, {hour}, {column}")
    conn.exec_driver_sql(f"INSERT INTO party_rollup (org_id, hour, party, party_id, {into}) "
                         f"SELECT l.org_id, {hour.replace('created_at', 'l.created_at')}, 'provider', p.id, "
                         f"{sums.replace('status', 'l.status')} FROM ledger_entry l JOIN provider p ON p.name = l.provider "
                         f"GROUP BY l.org_id, {hour.replace('created_at', 'l.created_at')}, p.id")
    day = "strftime('%Y-%m-%d 00:00:00.000000', hour)"
    conn.exec_driver_sql(f"INSERT INTO party_day_rollup (org_id, day, party, party_id, {into}) "
                         f"SELECT org_id, {day}, party, party_id, {', '.join(f'sum({c})' for c in into.split(', '))} "
                         f"FROM party_rollup GROUP BY org_id, {day}, party, party_id")
    conn.exec_driver_sql("INSERT INTO error_report (org_id, source, type, model, message, status, key_id, user_id, "
                         "app_id, agent, version, request_id, created_at) SELECT org_id, 'upstream', error_type, "
                         "requested_model, error_message, status, key_id, user_id, app_id, '', '', request_id, "
                         "created_at FROM ledger_entry WHERE status >= 400")
    conn.exec_driver_sql("ANALYZE")
    conn.commit()
    log(f"  rollups, error reports and ANALYZE in {time.perf_counter() - began:.1f} s")


def timed(client, path: str, runs: int) -> dict:
    samples = []
    status = None
    for _ in range(runs):
        began = time.perf_counter()
        resp = client.get(path)
        body = resp.get_data()
        samples.append((time.perf_counter() - began) * 1000)
        status = resp.status_code
    assert status == 200, (path, status, body[:300])
    samples.sort()
    return {"path": path, "p50_ms": round(statistics.median(samples), 1), "max_ms": round(samples[-1], 1),
            "runs": runs, "bytes": len(body)}


def export(client, org_id: int, start: str, end: str) -> dict:
    began = time.perf_counter()
    resp = client.get(f"/admin/export.csv?party=org&id={org_id}&start={start}&end={end}", buffered=False)
    chunks = iter(resp.response)
    first = next(chunks)
    first_ms = (time.perf_counter() - began) * 1000
    size, lines, samples = len(first), first.count(b"\n"), [rss_mb()]
    for chunk in chunks:
        size += len(chunk)
        lines += chunk.count(b"\n")
        if lines // 50_000 != (lines - chunk.count(b"\n")) // 50_000:
            samples.append(rss_mb())
    resp.close()
    total = time.perf_counter() - began
    samples.append(rss_mb())
    return {"rows": lines - 1, "first_bytes_ms": round(first_ms, 1), "total_s": round(total, 1),
            "rows_per_s": int((lines - 1) / total), "mb": round(size / 2**20, 1),
            "rss_mb_start": round(samples[0], 1), "rss_mb_peak": round(max(samples), 1),
            "rss_mb_end": round(samples[-1], 1), "rss_samples": len(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench console")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed loads per page")
    parser.add_argument("--keep", action="store_true", help="keep the instance folder")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from gevent import monkey

    monkey.patch_all()
    from sqlalchemy import select

    from gateway import boot, create_app, db
    from gateway.models import ApiKey, App, Org, User
    from gateway.services import tenancy

    tmp = Path(tempfile.mkdtemp(prefix="gateway-console-bench-"))
    try:
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config()))
        app = create_app({"instance": tmp, "config_path": tmp / "gateway.yaml", "secret_key": "bench",
                          "start_jobs": False})
        first = boot.prepare(app)
        with db.write_lock, db.session_scope() as s:
            default = s.scalar(select(Org).where(Org.name == first.org))
            other = tenancy.create_org(s, "other", 0, actor="bench")
            orgs = [default.id, other.id]
            users, apps, keys = {}, {}, {}
            for org in (default, other):
                n = 190 if org is default else 10
                users[org.id] = [tenancy.create_admin(s, f"user{i}@{org.name}.example", "password-123", org_id=org.id,
                                                      role="member", actor="bench").id for i in range(n)]
                made = [App(org_id=org.id, name=f"app {i}") for i in range(18 if org is default else 2)]
                s.add_all(made)
                s.flush()
                apps[org.id] = [a.id for a in made]
                keys[org.id] = s.scalar(select(ApiKey.id).where(ApiKey.org_id == org.id)) or tenancy.create_key(
                    s, org, name="bench", actor="bench").key.id
            s.scalar(select(User).where(User.email == first.email)).must_change_password = False
            admin_id = s.scalar(select(User.id).where(User.email == first.email))
            org_admin = tenancy.create_admin(s, "admin@default.example", "password-123", org_id=default.id,
                                             actor="bench").id
        log(f"filling {args.rows:,} ledger rows into {tmp}")
        with db.engine().connect() as conn:
            fill(conn, args.rows, orgs, users, apps, keys, log)
        from gateway.ledger.live import LIVE

        now = datetime.now(UTC).replace(tzinfo=None)
        LIVE.observe({"org_id": orgs[i % 2], "status": 200 if i % 50 else 500, "charge_micros": 100,
                      "saved_micros": 10, "benchmark_micros": 110, "input_tokens": 100, "output_tokens": 20,
                      "latency_ms": 50 + i % 900, "created_at": now - timedelta(seconds=i)} for i in range(3000))
        user_id = users[orgs[0]][0]
        results = {"rows": args.rows, "goal_ms": GOAL_MS, "pages": {}, "export": None}
        for who, uid in (("super-admin", admin_id), ("org-admin", org_admin)):
            client = app.test_client()
            with db.session_scope() as s:
                version = s.get(User, uid).session_version
            with client.session_transaction() as sess:
                sess["_user_id"] = f"{uid}:{version}"
                sess["_fresh"] = True
            pages = [("Home", "/admin/"), ("Home live partial", "/admin/home/live"),
                     ("Per-user usage, 30 days", "/admin/usage?period=30d"),
                     ("Per-user usage, 7 days", "/admin/usage?period=7d"),
                     ("Error reports, 7 days", "/admin/errors?period=7d"),
                     ("Gateway logs, one user", f"/admin/logs?user={user_id}")]
            if who == "super-admin":
                pages.insert(1, ("Home, one org", f"/admin/?org={orgs[1]}"))
            for label, path in pages:
                timed(client, path, 1)  # warm: templates compiled, SQLite pages cached
                results["pages"][f"{label} ({who})"] = timed(client, path, args.runs)
                log(f"  {label} ({who}): {results['pages'][f'{label} ({who})']['p50_ms']} ms")
            if who == "super-admin":
                day = timedelta(days=31)
                log("exporting the biggest org (every row)")
                results["export"] = export(client, orgs[0], (now - day).date().isoformat(), now.date().isoformat())
        slowest = max(p["p50_ms"] for p in results["pages"].values())
        results["goal_met"] = slowest < GOAL_MS
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print(markdown(results))
        log(f"results: {args.json}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")


def markdown(results: dict) -> str:
    out = [f"## Console pages over {results['rows']:,} ledger rows (goal: under {results['goal_ms']:.0f} ms)\n",
           "| page | p50 ms | max ms | runs |", "|---|---:|---:|---:|"]
    for label, p in results["pages"].items():
        out.append(f"| {label} | {p['p50_ms']} | {p['max_ms']} | {p['runs']} |")
    e = results["export"]
    if e:
        out += ["", "## Activity export of the biggest org, every row\n",
                "| rows | first bytes ms | total s | rows/s | CSV MB | RSS MB start / peak / end |",
                "|---:|---:|---:|---:|---:|---|",
                f"| {e['rows']:,} | {e['first_bytes_ms']} | {e['total_s']} | {e['rows_per_s']:,} | {e['mb']} | "
                f"{e['rss_mb_start']} / {e['rss_mb_peak']} / {e['rss_mb_end']} |"]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
