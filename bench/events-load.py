#!/usr/bin/env python3
"""Load and latency client of the event benchmarks (bench/events-emit.sh). Standard library only.

  emit        N keep-alive HTTP/1.1 connections over addond's admin Unix socket, each sending
              POST /api/events back to back (or paced to --rate events/s in total), spread over
              --procs processes; reports events/s and the emit (commit) latency. With --sse a
              separate process follows GET /api/events/stream and reports send -> SSE receipt.
  subscriber  one event at a time: POST /api/events, then poll the subscriber addon's
              GET /events on its host port until the event shows; reports emit -> delivered.
  redis       --target redis: the same emit machinery sending PUBLISH to redis-server over TCP
              (the client's own ceiling), or `redis-latency`: paced PUBLISH with a SUBSCRIBE
              connection measuring publish -> receive.

Every mode prints human-readable lines on stderr and one JSON summary line on stdout.
Times are wall-clock (time.time()) in every process, so send and receive times compare.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import sys
import time
import http.client


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary_us(values):
    return {f"p{p}_us": (round(pct(values, p) * 1e6) if values else None) for p in (50, 90, 99, 99.9)} | {
        "max_us": round(max(values) * 1e6) if values else None,
        "n": len(values),
    }


# ---- HTTP/1.1 over asyncio streams --------------------------------------------------------

async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    chunked = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if length is not None:
        body = await reader.readexactly(length)
    elif chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = b""
    return status, body


def http_request(method, path, body, host="addond"):
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def resp_command(*parts):
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


async def read_resp(reader):
    line = await reader.readline()
    t = line[:1]
    if t in (b"+", b"-", b":"):
        return line[1:-2]
    if t == b"$":
        n = int(line[1:-2])
        if n < 0:
            return None
        data = await reader.readexactly(n + 2)
        return data[:-2]
    if t == b"*":
        return [await read_resp(reader) for _ in range(int(line[1:-2]))]
    raise RuntimeError(f"unexpected RESP {line!r}")


# ---- emit ---------------------------------------------------------------------------------

async def emit_worker(args, conn_index, start_at, stop_at, rate_per_conn, lat, errors, counts):
    if args.target == "redis":
        reader, writer = await asyncio.open_connection("127.0.0.1", args.redis_port)
    else:
        reader, writer = await asyncio.open_unix_connection(args.socket)
    pad = "x" * max(0, args.payload_bytes)
    i = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    interval = 1.0 / rate_per_conn if rate_per_conn > 0 else 0.0
    next_at = start_at + (conn_index % 97) * interval / 97.0
    while True:
        if interval:
            now = time.time()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
        t0 = time.time()
        if t0 >= stop_at:
            break
        data = json.dumps({"t": t0, "c": conn_index, "i": i, "pad": pad}, separators=(",", ":"))
        if args.target == "redis":
            writer.write(resp_command("PUBLISH", args.name, data))
            reply = await read_resp(reader)
            ok = reply is not None
        else:
            body = json.dumps({"name": args.name, "data": json.loads(data)}, separators=(",", ":")).encode()
            writer.write(http_request("POST", "/api/events", body))
            status, _ = await read_response(reader)
            ok = status == 201
        t1 = time.time()
        if ok:
            lat.append(t1 - t0)
            counts[0] += 1
        else:
            errors[0] += 1
        i += 1
    writer.close()


def emit_proc(args, conns, first_index, start_at, stop_at, rate_per_conn, out_q):
    async def main():
        lat, errors, counts = [], [0], [0]
        await asyncio.gather(*[
            emit_worker(args, first_index + k, start_at, stop_at, rate_per_conn, lat, errors, counts)
            for k in range(conns)
        ])
        return lat, errors[0], counts[0]

    lat, errors, n = asyncio.run(main())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out_q.put({"lat": lat, "errors": errors, "n": n, "cpu": ru.ru_utime + ru.ru_stime})


def sse_proc(args, ready, stop_at, out_q):
    """Follows GET /api/events/stream (after the current end of the log) and measures
    send time (data.t) -> receipt of each event of our name."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(args.socket)
    q = f"name={args.name}&after={args.after}"
    s.sendall(f"GET /api/events/stream?{q} HTTP/1.1\r\nHost: addond\r\nAccept: text/event-stream\r\n\r\n".encode())
    s.settimeout(0.5)
    buf = b""
    lat, ts_lat = [], []
    ready.set()
    got_head = False
    while time.time() < stop_at + 2.0:
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            continue
        if not chunk:
            break
        now = time.time()
        buf += chunk
        if not got_head:
            if b"\r\n\r\n" not in buf:
                continue
            _, buf = buf.split(b"\r\n\r\n", 1)
            got_head = True
        # chunked framing lines and SSE lines: only `data: {...}` lines matter
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.startswith(b"data:"):
                try:
                    ev = json.loads(line[5:].strip())
                except ValueError:
                    continue
                d = ev.get("data") or {}
                if "t" in d:
                    lat.append(now - d["t"])
                    ts_lat.append(now - iso_to_epoch(ev["timestamp"]))
    s.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out_q.put({"sse_lat": lat, "sse_ts_lat": ts_lat, "cpu": ru.ru_utime + ru.ru_stime})


def iso_to_epoch(ts):
    # 2026-11-22T00:01:02.345Z
    from datetime import datetime, timezone
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def cmd_emit(args):
    procs = max(1, min(args.procs, args.conns))
    per = [args.conns // procs + (1 if k < args.conns % procs else 0) for k in range(procs)]
    start_at = time.time() + 1.0 + 0.2 * procs
    stop_at = start_at + args.seconds
    rate_per_conn = args.rate / args.conns if args.rate > 0 else 0.0
    out_q = mp.Queue()
    children = []
    sse = None
    if args.sse:
        ready = mp.Event()
        sse = mp.Process(target=sse_proc, args=(args, ready, stop_at, out_q))
        sse.start()
        ready.wait(10)
    first = 0
    for k in range(procs):
        p = mp.Process(target=emit_proc, args=(args, per[k], first, start_at, stop_at, rate_per_conn, out_q))
        p.start()
        children.append(p)
        first += per[k]
    results = [out_q.get() for _ in range(procs + (1 if sse else 0))]
    for p in children + ([sse] if sse else []):
        p.join()
    lat = [x for r in results if "lat" in r for x in r["lat"]]
    n = sum(r.get("n", 0) for r in results)
    errors = sum(r.get("errors", 0) for r in results)
    cpu = sum(r["cpu"] for r in results)
    out = {
        "mode": "emit",
        "target": args.target,
        "conns": args.conns,
        "procs": procs,
        "seconds": args.seconds,
        "rate_asked": args.rate,
        "events": n,
        "errors": errors,
        "events_per_s": round(n / args.seconds, 1),
        "client_cpu_s": round(cpu, 2),
        "emit": summary_us(lat),
    }
    sse_r = next((r for r in results if "sse_lat" in r), None)
    if sse_r is not None:
        out["sse"] = summary_us(sse_r["sse_lat"])
        out["sse_from_timestamp"] = summary_us(sse_r["sse_ts_lat"])
        out["sse_received"] = len(sse_r["sse_lat"])
    e = out["emit"]
    print(f"{args.target} emit: {n} events in {args.seconds}s over {args.conns} connections "
          f"({procs} processes): {out['events_per_s']}/s, errors {errors}; "
          f"emit latency p50 {e['p50_us']} µs, p99 {e['p99_us']} µs, max {e['max_us']} µs; "
          f"client CPU {out['client_cpu_s']} s", file=sys.stderr)
    if sse_r is not None:
        s = out["sse"]
        print(f"SSE: received {out['sse_received']} of {n}; send -> SSE receipt p50 {s['p50_us']} µs, "
              f"p99 {s['p99_us']} µs, max {s['max_us']} µs", file=sys.stderr)
    print(json.dumps(out))


# ---- subscriber delivery ------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("addond")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


def cmd_subscriber(args):
    admin = UnixHTTPConnection(args.socket)
    addon = http.client.HTTPConnection("127.0.0.1", args.port)
    addon.request("DELETE", "/events")
    addon.getresponse().read()
    lat, ack_lat, ts_lat, polls = [], [], [], []
    for i in range(args.count):
        t0 = time.time()
        body = json.dumps({"name": args.name, "data": {"t": t0, "i": i}})
        admin.request("POST", "/api/events", body, {"Content-Type": "application/json"})
        r = admin.getresponse()
        ev = json.loads(r.read())["data"]
        t_ack = time.time()
        ack_lat.append(t_ack - t0)
        n = 0
        while True:
            addon.request("GET", "/events")
            got = json.loads(addon.getresponse().read())
            n += 1
            if any((e.get("data") or {}).get("i") == i and e.get("id") == ev["id"] for e in got["events"]):
                t1 = time.time()
                break
            if time.time() - t0 > 30:
                raise SystemExit(f"event {i} (id {ev['id']}) not delivered within 30 s")
            if args.poll_sleep_ms > 0:
                time.sleep(args.poll_sleep_ms / 1000.0)
        lat.append(t1 - t0)
        ts_lat.append(t1 - iso_to_epoch(ev["timestamp"]))
        polls.append(n)
        addon.request("DELETE", "/events")
        addon.getresponse().read()
        time.sleep(args.gap_ms / 1000.0)
    # resolution: how long one poll takes (a GET of an empty list)
    t = time.time()
    for _ in range(200):
        addon.request("GET", "/events")
        addon.getresponse().read()
    poll_rtt = (time.time() - t) / 200 + args.poll_sleep_ms / 1000.0
    out = {
        "mode": "subscriber",
        "events": args.count,
        "delivered": summary_us(lat),
        "emit_ack": summary_us(ack_lat),
        "delivered_from_timestamp": summary_us(ts_lat),
        "poll_period_us": round(poll_rtt * 1e6),
        "polls_median": pct(polls, 50),
    }
    d = out["delivered"]
    print(f"subscriber: {args.count} events one at a time; emit -> seen in GET /events p50 {d['p50_us']} µs, "
          f"p99 {d['p99_us']} µs, max {d['max_us']} µs (poll period ~{out['poll_period_us']} µs); "
          f"emit acknowledged p50 {out['emit_ack']['p50_us']} µs", file=sys.stderr)
    print(json.dumps(out))


# ---- redis publish -> subscribe latency -----------------------------------------------------

def cmd_redis_latency(args):
    async def main():
        sr, sw = await asyncio.open_connection("127.0.0.1", args.redis_port)
        sw.write(resp_command("SUBSCRIBE", args.name))
        await read_resp(sr)
        pr, pw = await asyncio.open_connection("127.0.0.1", args.redis_port)
        lat = []
        done = asyncio.Event()
        sent = [0]

        async def sub():
            while not (done.is_set() and len(lat) >= sent[0]):
                try:
                    msg = await asyncio.wait_for(read_resp(sr), 2.0)
                except asyncio.TimeoutError:
                    break
                now = time.time()
                if isinstance(msg, list) and msg[0] == b"message":
                    lat.append(now - json.loads(msg[2])["t"])

        task = asyncio.create_task(sub())
        interval = 1.0 / args.rate
        start = time.time() + 0.2
        stop = start + args.seconds
        nxt = start
        while True:
            now = time.time()
            if nxt > now:
                await asyncio.sleep(nxt - now)
            nxt += interval
            t0 = time.time()
            if t0 >= stop:
                break
            pw.write(resp_command("PUBLISH", args.name, json.dumps({"t": t0, "i": sent[0]})))
            await read_resp(pr)
            sent[0] += 1
        done.set()
        await task
        return lat, sent[0]

    lat, sent = asyncio.run(main())
    out = {"mode": "redis-latency", "rate": args.rate, "seconds": args.seconds, "sent": sent, "received": len(lat),
           "publish_to_receive": summary_us(lat)}
    d = out["publish_to_receive"]
    print(f"redis pub/sub: {sent} published at {args.rate}/s, {len(lat)} received; publish -> receive "
          f"p50 {d['p50_us']} µs, p99 {d['p99_us']} µs, max {d['max_us']} µs", file=sys.stderr)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("emit")
    e.add_argument("--target", choices=["addond", "redis"], default="addond")
    e.add_argument("--socket")
    e.add_argument("--redis-port", type=int, default=7182)
    e.add_argument("--conns", type=int, default=64)
    e.add_argument("--procs", type=int, default=2)
    e.add_argument("--seconds", type=float, default=10)
    e.add_argument("--rate", type=float, default=0, help="events/s in total; 0: as fast as possible")
    e.add_argument("--name", default="bench.load")
    e.add_argument("--payload-bytes", type=int, default=64)
    e.add_argument("--sse", action="store_true")
    e.add_argument("--after", type=int, default=0, help="SSE: start after this event id")
    s = sub.add_parser("subscriber")
    s.add_argument("--socket", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=300)
    s.add_argument("--gap-ms", type=float, default=10)
    s.add_argument("--poll-sleep-ms", type=float, default=0.2)
    s.add_argument("--name", default="bench.sub")
    r = sub.add_parser("redis-latency")
    r.add_argument("--redis-port", type=int, default=7182)
    r.add_argument("--rate", type=float, default=1000)
    r.add_argument("--seconds", type=float, default=10)
    r.add_argument("--name", default="bench.lat")
    args = ap.parse_args()
    {"emit": cmd_emit, "subscriber": cmd_subscriber, "redis-latency": cmd_redis_latency}[args.cmd](args)


if __name__ == "__main__":
    main()
