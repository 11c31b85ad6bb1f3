#!/usr/bin/python3
"""CTest deploy_prometheus_live_test: a real Prometheus server scrapes a real local rhythm run.

Starts one learner and two actors (tiny config, free ports on 127.0.0.1), then Debian's
`prometheus` on a free port with a temporary data directory, a 1 s scrape interval, the job
names of deploy/prometheus/prometheus.yml and the shipped alert rules
(deploy/prometheus/rhythm-alerts.yml). Through Prometheus' HTTP API it then finds rhythm's
series from the learner and from every actor, all targets up, and every alert rule evaluated
without error against the live data. Polls with deadlines; every child is killed on exit.

Exits 77 (CTest: skipped) only when prometheus is missing. Env: RHYTHM_BIN_DIR.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rhythm_local  # noqa: E402

PROM_DIR = os.path.join(rhythm_local.REPO, "deploy", "prometheus")
RUN = [None]


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def poll(what, fn, timeout):
    """fn() until it returns a true value; its last result and error go into the failure."""
    deadline = time.time() + timeout
    last = err = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, RuntimeError, ValueError) as e:
            err = e
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout} s (last result {last!r}, error {err})")


def main():
    prometheus = shutil.which("prometheus")
    if not prometheus:
        print("SKIP: prometheus not found (apt-get install prometheus)")
        return 77
    t0 = time.time()
    with open(os.path.join(PROM_DIR, "prometheus.yml")) as f:
        jobs = re.findall(r"job_name:\s*(rhythm-[a-z]+)", f.read())
    assert jobs == ["rhythm-learner", "rhythm-actor"], f"shipped job names changed: {jobs}"

    run = rhythm_local.LocalRun(actors=2)
    RUN[0] = run
    learner = f"127.0.0.1:{run.learner_metrics}"
    actors = [f"127.0.0.1:{p}" for p in run.actor_metrics]
    config = os.path.join(run.tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {os.path.join(PROM_DIR, "rhythm-alerts.yml")}
scrape_configs:
  - job_name: rhythm-learner
    static_configs:
      - targets: ["{learner}"]
  - job_name: rhythm-actor
    static_configs:
      - targets: {json.dumps(actors)}
""")

    port = None
    for _ in range(3):  # a free port can be taken between the probe and the bind: retry
        port = rhythm_local.free_port()
        p = rhythm_local.spawn([prometheus, f"--config.file={config}",
                                f"--storage.tsdb.path={run.tmp}/tsdb",
                                f"--web.listen-address=127.0.0.1:{port}",
                                "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                               os.path.join(run.tmp, "prometheus.log"))
        try:
            poll("prometheus ready", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200, 20)
            break
        except AssertionError:
            if p.poll() is None:
                raise
    else:
        raise AssertionError(f"prometheus did not start (log {run.tmp}/prometheus.log)")

    # Series from the learner and from every actor, as Prometheus stored them.
    def instances_with_series():
        data = api(port, "/api/v1/query",
                   query='count by (job, instance) ({__name__=~"rhythm_.+"})')["result"]
        return {(r["metric"]["job"], r["metric"]["instance"]): int(r["value"][1]) for r in data}

    want = {("rhythm-learner", learner)} | {("rhythm-actor", a) for a in actors}
    found = poll("rhythm series from the learner and every actor",
                 lambda: (lambda got: got if want <= set(got) else None)(instances_with_series()),
                 40)
    for (job, inst), n in sorted(found.items()):
        print(f"prometheus: {n} rhythm series from {job} {inst}")

    # Named series: the learner trains and each actor reports its policy version.
    def per_instance(q):
        return {r["metric"]["instance"]: float(r["value"][1]) for r in api(port, "/api/v1/query",
                                                                          query=q)["result"]}
    poll("rhythm_learner_policy_version >= 1 in Prometheus",
         lambda: per_instance("rhythm_learner_policy_version").get(learner, 0) >= 1, 40)
    poll("rhythm_actor_rollouts_sent_total > 0 for every actor",
         lambda: all(per_instance("rhythm_actor_rollouts_sent_total").get(a, 0) > 0
                     for a in actors), 40)
    ups = per_instance("up")
    assert all(ups.get(t) == 1 for t in [learner] + actors), f"targets not all up: {ups}"

    # Every shipped alert rule evaluates cleanly on live data.
    def rules_evaluated():
        groups = api(port, "/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
            return None
        return rules
    rules = poll("alert rules evaluated", rules_evaluated, 20)
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not bad, f"alert rules failing on live data: {bad}"
    firing = [r["name"] for r in rules if r.get("state") == "firing"]
    assert not firing, f"alerts firing on a healthy run: {firing}"
    print(f"prometheus: {len(rules)} alert rules evaluated, health ok, none firing")

    print(f"deploy_prometheus_live_test: passed in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except (AssertionError, RuntimeError, FileNotFoundError) as e:
        print(f"FAIL: {e}")
    finally:
        rhythm_local.cleanup(RUN[0], rc in (0, 77))
    sys.exit(rc)
