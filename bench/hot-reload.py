#!/usr/bin/env python3
"""Issue 13 §4: publish → every instance answering with the new code, addond vs plain Docker.

One run, side by side, on the same machine and image:

  addond   `addonctl addons build DIR --version V` (a context whose layers are cached but for
           one ENV line, as a small code change would be) then `addonctl addons upgrade hot V
           --surge 3` of a 3-replica addon; callers go through the gateway with an API key
  docker   the same `docker build` (DOCKER_BUILDKIT=0) then `docker rm -f` + `docker run` of
           each of 3 containers on fixed host ports; callers go straight to those ports

Four callers per target run for the whole series, each on a keep-alive connection (a new one
after an error), calling `whoami`, which answers with the version the instance runs
(ADDOND_VERSION). Per publish: publish → first answer from the new version, publish → all
answers new (the first new answer after the last old one), and the calls that failed
(anything but a 200 with a body, including refused connections) from the publish's start to
the next one's. Prints a table and writes JSON lines to $BENCH_OUT/hot-reload.jsonl.

Usage: bench/hot-reload.py ADDOND ADDONCTL [PUBLISHES (20)]
"""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

IMAGE = "addond-sample:latest"
CALLERS = 4
ANCHOR_PORTS = [8961, 8962, 8963]


def say(*a):
    print("hot-reload:", *a, file=sys.stderr, flush=True)


def run(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


class Caller(threading.Thread):
    """Calls whoami in a loop on keep-alive connections, recording (t, ok, version)."""

    def __init__(self, targets, path, headers, body):
        super().__init__(daemon=True)
        self.targets, self.path, self.headers, self.body = targets, path, headers, body
        self.records = []
        self.stop = False

    def run(self):
        k = 0
        conn = None
        while not self.stop:
            host, port = self.targets[k % len(self.targets)]
            k += 1
            try:
                if conn is None or len(self.targets) > 1:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                r = conn.getresponse()
                data = r.read()
                v = json.loads(data) if data else {}
                v = v.get("data", v)
                self.records.append((time.monotonic(), r.status == 200, v.get("version")))
            except (OSError, http.client.HTTPException, ValueError):
                self.records.append((time.monotonic(), False, None))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.002)


def measure(callers, t0, t1, version):
    recs = sorted(r for c in callers for r in c.records if t0 <= r[0] < t1)
    failed = sum(1 for r in recs if not r[1])
    new = [r[0] for r in recs if r[1] and r[2] == version]
    old = [r[0] for r in recs if r[1] and r[2] != version]
    first = new[0] - t0 if new else None
    last_old = max(old) if old else t0
    after = [t for t in new if t > last_old]
    all_new = after[0] - t0 if after else None
    return {"first_new_ms": first and first * 1000, "all_new_ms": all_new and all_new * 1000, "failed": failed, "calls": len(recs)}


def context(dirpath, version, with_manifest):
    binary = os.path.join(dirpath, "sample-addon")
    with open(os.path.join(dirpath, "Dockerfile"), "w") as f:
        f.write(
            "FROM scratch\nCOPY sample-addon /sample-addon\nUSER 65534:65534\nEXPOSE 8080\n"
            f"ENV HOT_RELOAD_ITERATION={version}\nENTRYPOINT [\"/sample-addon\"]\n"
        )
    if with_manifest:
        m = {
            "name": "hot", "version": version, "category": "utilities",
            "services": [{"name": "api", "replicas": 3, "environment": {"SAMPLE_QUIET": "1"},
                          "health_check": {"path": "/health", "interval": 1, "timeout": 2, "retries": 2}}],
            "actions": ["whoami"],
        }
        with open(os.path.join(dirpath, "addon.json"), "w") as f:
            json.dump(m, f)
    return binary


def summary(name, rows):
    def pct(key, q):
        vals = sorted(r[key] for r in rows if r[key] is not None)
        if not vals:
            return float("nan")
        return vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))]
    missing = sum(1 for r in rows if r["all_new_ms"] is None)
    return (f"{name:8} publishes {len(rows):3}  first-new p50 {pct('first_new_ms', .5):7.0f} ms  p99 {pct('first_new_ms', .99):7.0f} ms"
            f"  all-new p50 {pct('all_new_ms', .5):7.0f} ms  p99 {pct('all_new_ms', .99):7.0f} ms"
            f"  failed calls {sum(r['failed'] for r in rows)} of {sum(r['calls'] for r in rows)}"
            + (f"  (never all new: {missing})" if missing else ""))


def main():
    addond, addonctl = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    out_dir = os.environ.get("BENCH_OUT", os.path.join(os.path.dirname(__file__), "results"))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="addond-hot.", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    sock = os.path.join(tmp, "addond.sock")
    with open(os.path.join(tmp, "config.toml"), "w") as f:
        f.write(f"""[daemon]
data_dir = "{tmp}/data"
socket_path = "{sock}"
log_level = "info"

[ports]
range_start = 8900
range_end = 8959

[docker]
subnet_pool = "172.28.0.0/16"
subnet_prefix = 26

[gateway]
listen = "127.0.0.1:0"

[addon_api]
port = 0
""")
    log = open(os.path.join(tmp, "addond.log"), "w")
    daemon = subprocess.Popen([addond, "--config", os.path.join(tmp, "config.toml")], stdout=log, stderr=log)
    ctl = lambda *a: run(addonctl, "--socket", sock, *a)
    anchors = []
    try:
        for _ in range(300):
            try:
                health = json.loads(run("curl", "-sf", "--unix-socket", sock, "http://addond/health"))["data"]
                if health.get("docker") == "reachable":
                    break
            except SystemExit:
                pass
            time.sleep(0.05)
        gw_host, gw_port = health["gateway"].rsplit(":", 1)
        # The sample binary, from the image every test uses.
        ctx = os.path.join(tmp, "ctx")
        os.makedirs(ctx)
        cid = run("docker", "create", IMAGE).strip()
        run("docker", "cp", f"{cid}:/sample-addon", os.path.join(ctx, "sample-addon"))
        run("docker", "rm", cid)
        context(ctx, "1.0.0", True)
        ctl("addons", "build", ctx)
        ctl("addons", "install", "hot", "--wait")
        ctl("apps", "create", "hot-bench")
        grant = json.loads(ctl("--json", "grants", "create", "--app", "hot-bench", "--addon", "hot"))
        key = grant["api_key"]

        body = json.dumps({"action": "whoami"})
        hdr = {"apikey": key, "content-type": "application/json"}
        callers = [Caller([(gw_host, int(gw_port))], "/api/addons/hot/execute", hdr, body) for _ in range(CALLERS)]
        for c in callers:
            c.start()
        time.sleep(1)
        rows = []
        marks = []
        for i in range(1, n + 1):
            v = f"1.0.{i}"
            context(ctx, v, True)
            t0 = time.monotonic()
            ctl("addons", "build", ctx, "--version", v)
            ctl("addons", "upgrade", "hot", v, "--surge", "3")
            marks.append((t0, v))
            time.sleep(1.0)
        t_end = time.monotonic()
        for c in callers:
            c.stop = True
        for k, (t0, v) in enumerate(marks):
            t1 = marks[k + 1][0] if k + 1 < len(marks) else t_end
            rows.append(measure(callers, t0, t1, v))
        ctl("addons", "uninstall", "hot", "--wait")

        # The anchor: docker build, then rm -f + run of each container.
        actx = os.path.join(tmp, "anchor")
        os.makedirs(actx)
        shutil.copy(os.path.join(ctx, "sample-addon"), actx)

        def docker_publish(v):
            context(actx, v, False)
            run("docker", "build", "-q", "-t", f"addond-hot-anchor:{v}", actx, env={**os.environ, "DOCKER_BUILDKIT": "0"})
            for k, port in enumerate(ANCHOR_PORTS):
                name = f"addond-hot-anchor-{k}"
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
                run("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                    "-e", f"ADDOND_VERSION={v}", "-e", "SAMPLE_QUIET=1", f"addond-hot-anchor:{v}")
                anchors.append(name)

        docker_publish("1.0.0")
        time.sleep(1)
        acallers = [Caller([("127.0.0.1", p) for p in ANCHOR_PORTS], "/execute/whoami", {"content-type": "application/json"}, "{}")
                    for _ in range(CALLERS)]
        for c in acallers:
            c.start()
        time.sleep(1)
        amarks = []
        for i in range(1, n + 1):
            v = f"1.0.{i}"
            t0 = time.monotonic()
            docker_publish(v)
            amarks.append((t0, v))
            time.sleep(1.0)
        t_end = time.monotonic()
        for c in acallers:
            c.stop = True
        arows = []
        for k, (t0, v) in enumerate(amarks):
            t1 = amarks[k + 1][0] if k + 1 < len(amarks) else t_end
            arows.append(measure(acallers, t0, t1, v))

        with open(os.path.join(out_dir, "hot-reload.jsonl"), "w") as f:
            for name, rs in (("addond", rows), ("docker", arows)):
                for r in rs:
                    f.write(json.dumps({"target": name, **r}) + "\n")
        print(summary("addond", rows))
        print(summary("docker", arows))
    finally:
        for name in set(anchors):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["sh", "-c", "docker images -q 'addond-hot-anchor' | sort -u | xargs -r docker rmi -f"], capture_output=True)
        # The daemon leaves addon containers running by design: uninstall first.
        subprocess.run([addonctl, "--socket", sock, "addons", "uninstall", "hot", "--wait"], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
