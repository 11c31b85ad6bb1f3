#!/usr/bin/python3
"""CTest deploy_compose_test: the top-level docker-compose.yml.

1. `docker-compose config` (Debian's docker-compose 1.29 validates the file against the Compose
   schema without a Docker engine) and its resolved output;
2. what scaling and operation need: actors have no container_name and no host ports; every
   service has a health check and a restart policy; the learner keeps its run directory on a
   named volume and resumes from it; Prometheus and Grafana mount the shipped files;
3. the scrape configuration reaches the ports the processes listen on (learner and actor
   metrics ports, DNS discovery of the `actor` service);
4. the learner's and the actors' command lines pass rhythm's own config loader
   (--print-config), with deploy/config/rhythm.yaml as the mounted config.

Exits 77 (CTest: skipped) only when docker-compose is missing. yaml is python3-yaml, which
Debian's docker-compose depends on. Env: RHYTHM_BIN_DIR (default build/bin).
"""
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("RHYTHM_BIN_DIR", os.path.join(REPO, "build", "bin"))
problems = []


def fail(msg):
    problems.append(msg)


def main():
    exe = shutil.which("docker-compose")
    if not exe:
        print("SKIP: docker-compose not found (apt-get install docker-compose)")
        return 77
    import yaml  # python3-yaml: a dependency of Debian's docker-compose

    env = dict(os.environ)
    for var in ("RHYTHM_IMAGE", "RHYTHM_LEARNER_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT",
                "GRAFANA_ADMIN_PASSWORD"):
        env.pop(var, None)
    r = subprocess.run([exe, "-f", os.path.join(REPO, "docker-compose.yml"),
                        "--project-directory", REPO, "config"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        print(f"FAIL: docker-compose config:\n{r.stderr}")
        return 1
    cfg = yaml.safe_load(r.stdout)
    services = cfg["services"]
    for name in ("learner", "actor", "prometheus", "grafana"):
        if name not in services:
            fail(f"no service {name}")
    if problems:
        return report()

    for name, s in services.items():
        if not s.get("healthcheck", {}).get("test"):
            fail(f"{name}: no healthcheck")
        if s.get("restart") not in ("always", "unless-stopped", "on-failure"):
            fail(f"{name}: restart policy {s.get('restart')!r}")
    actor, learner = services["actor"], services["learner"]
    if "container_name" in actor:
        fail("actor: container_name set: `--scale actor=N` would clash")
    if actor.get("ports"):
        fail("actor: host ports published: `--scale actor=N` would clash")
    if "learner" not in actor.get("depends_on", {}):
        fail("actor: does not depend on learner")

    # The learner resumes from a named volume.
    lcmd = learner["command"]
    resume = lcmd[lcmd.index("--resume") + 1] if "--resume" in lcmd else None
    if not resume:
        fail("learner: not started with --resume")
    vols = [v for v in learner.get("volumes", []) if isinstance(v, dict) or ":" in str(v)]
    named = [v for v in vols if isinstance(v, dict) and v.get("type") == "volume"
             or isinstance(v, str) and not v.startswith("/")]
    if not any(resume and resume.startswith((v["target"] if isinstance(v, dict)
                                             else v.split(":")[1]).rstrip("/") + "/")
               for v in named):
        fail(f"learner: run directory {resume} is not on a named volume")
    if "checkpoints" not in cfg.get("volumes", {}):
        fail("no `checkpoints` volume")

    # Ports: what the processes listen on vs. the scrape configuration and health checks.
    def set_value(cmd, key):
        for i, a in enumerate(cmd[:-1]):
            if a == "--set" and cmd[i + 1].startswith(key + "="):
                return cmd[i + 1].split("=", 1)[1]
        return None

    lport = (set_value(lcmd, "learner.metrics_address") or "").rsplit(":", 1)[-1]
    aport = (set_value(actor["command"], "actor.metrics_address") or "").rsplit(":", 1)[-1]
    if not aport or aport == "0":
        fail("actor: actor.metrics_address must be a fixed port for DNS discovery")
    with open(os.path.join(REPO, "deploy", "prometheus", "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    for job, svc, port in (("rhythm-learner", "learner", lport), ("rhythm-actor", "actor", aport)):
        sd = (jobs.get(job) or {}).get("dns_sd_configs") or [{}]
        if svc not in sd[0].get("names", []) or str(sd[0].get("port")) != port:
            fail(f"prometheus.yml job {job}: should discover '{svc}' on port {port}, has {sd[0]}")
        hc = services[svc]["healthcheck"]["test"]
        if port not in hc:
            fail(f"{svc}: healthcheck {hc} does not probe the metrics port {port}")
    for svc, target in (("prometheus", "/etc/prometheus"),
                        ("grafana", "/etc/grafana/provisioning"),
                        ("grafana", "/var/lib/grafana/dashboards/rhythm")):
        if not any(isinstance(v, dict) and v.get("target") == target or
                   isinstance(v, str) and v.split(":")[1] == target
                   for v in services[svc].get("volumes", [])):
            fail(f"{svc}: nothing mounted at {target}")

    # The command lines through rhythm's config loader.
    config = os.path.join(REPO, "deploy", "config", "rhythm.yaml")
    for svc in ("learner", "actor"):
        cmd = [a.replace("/etc/rhythm/rhythm.yaml", config) for a in services[svc]["command"]]
        path = os.path.join(BIN, cmd[0])
        if not os.path.exists(path):
            fail(f"{path} not built")
            continue
        r = subprocess.run([path] + cmd[1:] + ["--print-config"], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"{svc}: {' '.join(cmd)}: {r.stdout}{r.stderr}".strip())
    return report()


def report():
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print("deploy_compose_test: docker-compose.yml is valid, scalable and consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
