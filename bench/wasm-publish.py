#!/usr/bin/env python3
"""Publish -> first answer from the new code, for a WebAssembly addon (bench/wasm.sh).

usage: wasm-publish.py SOCKET GATEWAY KEY ADDON ROUNDS MODULE...

Each round publishes the next module (round-robin over MODULE...) on the admin socket and
then calls `version` through the gateway on a kept-alive connection until it answers the
module's tag (the number after `-` in its file name, e.g. echo-3.wasm answers "3"). Prints
one JSON line: p50/p99/max of publish-to-first-new-answer and of the publish call alone, in ms.
"""
import http.client
import json
import socket
import sys
import time


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("addond")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    sock, gw, key, addon, rounds = sys.argv[1:6]
    modules = sys.argv[6:]
    blobs = [(open(m, "rb").read(), m.rsplit("-", 1)[1].split(".")[0]) for m in modules]
    host, port = gw.rsplit(":", 1)
    g = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"action": "version"})
    total, publish = [], []
    for i in range(int(rounds)):
        blob, tag = blobs[i % len(blobs)]
        a = UnixHTTP(sock)
        t0 = time.perf_counter()
        a.request("POST", f"/api/addons/{addon}/publish", body=blob, headers={"content-type": "application/wasm"})
        r = a.getresponse()
        out = r.read()
        t1 = time.perf_counter()
        if r.status != 200:
            sys.exit(f"publish failed: {r.status} {out[:300]!r}")
        while True:
            g.request("POST", f"/api/addons/{addon}/execute", body=body, headers={"apikey": key, "content-type": "application/json"})
            resp = g.getresponse()
            got = json.loads(resp.read())
            if resp.status == 200 and got.get("data") == tag:
                break
            if time.perf_counter() - t0 > 10:
                sys.exit(f"tag {tag} never answered: {got}")
        total.append((time.perf_counter() - t0) * 1e3)
        publish.append((t1 - t0) * 1e3)
    print(json.dumps({
        "rounds": len(total),
        "modules": len(blobs),
        "first_new_answer_ms": {"p50": round(pct(total, 0.5), 3), "p99": round(pct(total, 0.99), 3), "max": round(max(total), 3)},
        "publish_call_ms": {"p50": round(pct(publish, 0.5), 3), "p99": round(pct(publish, 0.99), 3)},
    }))


if __name__ == "__main__":
    main()
