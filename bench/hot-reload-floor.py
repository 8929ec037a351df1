#!/usr/bin/env python3
"""Issue 13 §4, the floor: the least time Docker alone needs for what a hot reload does,
with no daemon in between. Each round: `docker build` of the same context as
bench/hot-reload.py (cached layers, one changed ENV line; classic builder), then three
`docker run -d` side by side (threads) of the new image on a user-defined network, with a
published loopback port and the sandbox flags addond gives its containers, and the clock
stops when all three answer `/execute/whoami` with the new version. The previous round's
containers keep running meanwhile (blue/green, as addond does) and are removed after.
No health gate, no traffic shift, no database: what is left is Docker's own work.
BENCH_FLOOR_CALLERS (0) callers call `whoami` on the running containers meanwhile, as
bench/hot-reload.py's do (its `Caller`, round robin, a new connection per call), so the
floor can be taken under the same load as the publishes it is compared with.

  hot-reload-floor.py ROUNDS    prints build, start and total p50/p99 in ms
"""
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

PORTS = [[8964, 8965, 8966], [8967, 8968, 8969]]
NETWORK = "addond_hot_floor"
FLAGS = ["--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid,nodev,size=67108864", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges:true", "--user", "65534:65534", "--memory", "512m",
         "--memory-swap", "512m", "--cpus", "0.5", "--pids-limit", "256", "--restart", "no",
         "--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
         "-e", "SAMPLE_QUIET=1", "-e", "PORT=8080"]


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout.strip()


def answers(port, version):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("POST", "/execute/whoami", body="{}", headers={"content-type": "application/json"})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status == 200 and json.loads(body).get("version") == version
    except Exception:
        return False


def pct(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))]


def caller_class():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hot-reload.py")
    spec = importlib.util.spec_from_file_location("hot_reload", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Caller


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    n_callers = int(os.environ.get("BENCH_FLOOR_CALLERS", "0"))
    callers = []
    tmp = tempfile.mkdtemp(prefix="addond-hot-floor.", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    made = []
    subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)
    run("docker", "network", "create", NETWORK)
    try:
        cid = run("docker", "create", "addond-sample:latest")
        run("docker", "cp", f"{cid}:/sample-addon", os.path.join(tmp, "sample-addon"))
        run("docker", "rm", cid)
        builds, starts, totals = [], [], []
        for i in range(n + 1):
            v = f"1.0.{i}"
            with open(os.path.join(tmp, "Dockerfile"), "w") as f:
                f.write("FROM scratch\nCOPY sample-addon /sample-addon\nUSER 65534:65534\nEXPOSE 8080\n"
                        f"ENV HOT_RELOAD_ITERATION={v}\nENTRYPOINT [\"/sample-addon\"]\n")
            ports = PORTS[i % 2]
            t0 = time.monotonic()
            run("docker", "build", "-q", "-t", f"addond-hot-floor:{v}", tmp, env={**os.environ, "DOCKER_BUILDKIT": "0"})
            t1 = time.monotonic()
            names = [f"addond-hot-floor-{i}-{k}" for k in range(3)]
            errors = []

            def start(name, port):
                try:
                    run("docker", "run", "-d", "--name", name, "--network", NETWORK, "-p", f"127.0.0.1:{port}:8080",
                        "-e", f"ADDOND_VERSION={v}", *FLAGS, f"addond-hot-floor:{v}")
                    while not answers(port, v):
                        time.sleep(0.002)
                except SystemExit as e:
                    errors.append(str(e))

            threads = [threading.Thread(target=start, args=(nm, p)) for nm, p in zip(names, ports)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            t2 = time.monotonic()
            if errors:
                raise SystemExit(errors[0])
            # The previous round's containers go now, outside the clock.
            for old in made:
                subprocess.run(["docker", "rm", "-f", old], capture_output=True)
            made = names
            targets = [("127.0.0.1", p) for p in ports]
            if n_callers and not callers:
                Caller = caller_class()
                callers = [Caller(targets, "/execute/whoami", {"content-type": "application/json"}, "{}") for _ in range(n_callers)]
                for c in callers:
                    c.start()
            for c in callers:
                c.targets = targets
            if i > 0:  # the first round fills the build cache
                builds.append((t1 - t0) * 1000)
                starts.append((t2 - t1) * 1000)
                totals.append((t2 - t0) * 1000)
            time.sleep(0.5)
        for c in callers:
            c.stop = True
        if callers:
            calls = sum(len(c.records) for c in callers)
            print(f"docker floor callers {n_callers}, calls {calls}")
        for name, vals in (("build", builds), ("3 starts", starts), ("total", totals)):
            print(f"docker floor {name:9} rounds {len(vals):3}  p50 {pct(vals, .5):6.0f} ms  p99 {pct(vals, .99):6.0f} ms"
                  f"  min {min(vals):6.0f} ms")
    finally:
        for c in callers:
            c.stop = True
        for name in made:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["sh", "-c", "docker images -q 'addond-hot-floor' | sort -u | xargs -r docker rmi -f"], capture_output=True)
        subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
