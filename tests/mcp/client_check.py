"""Drives addond's MCP server with the official MCP Python client (`pip install mcp`), over
Streamable HTTP on the gateway (both the 2026-07-28 stateless revision and the
session-based one before it) and over stdio (`addonctl mcp`). Run by tests/mcp.rs against a
real daemon with the sample addon installed as `pay` and `other` (and `late` registered,
not installed); every check that fails raises, and the exit code is not 0.

Environment: MCP_URL (the gateway's /mcp), MCP_KEY (a key whose grant covers `pay`),
ADDONCTL (the binary), ADDOND_SOCKET (the daemon's admin socket).
"""

import asyncio
import json
import os
import subprocess
import sys

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

URL = os.environ["MCP_URL"]
KEY = os.environ["MCP_KEY"]
ADDONCTL = os.environ["ADDONCTL"]
SOCKET = os.environ["ADDOND_SOCKET"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what[:160]}", flush=True)


def ctl(*args, ok=True):
    p = subprocess.run([ADDONCTL, "--socket", SOCKET, *args], capture_output=True, text=True, timeout=300)
    if ok and p.returncode != 0:
        raise AssertionError(f"addonctl {' '.join(args)} failed: {p.stderr}")
    return p


def http_client(mode, key=KEY, on_message=None):
    headers = {"Authorization": f"Bearer {key}"}
    transport = streamable_http_client(URL, http_client=create_mcp_http_client(headers=headers))
    return Client(transport, mode=mode, cache=None, message_handler=on_message, read_timeout_seconds=60)


def stdio_client(on_message=None):
    params = StdioServerParameters(command=ADDONCTL, args=["--socket", SOCKET, "mcp"])
    return Client(params, mode="legacy", cache=None, message_handler=on_message, read_timeout_seconds=60)


def names(listed):
    return sorted(t.name for t in listed.tools)


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def refused_without_a_valid_key():
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with httpx2.AsyncClient() as c:
        for headers, what in [({}, "no key"), ({"Authorization": "Bearer ak_000000000000_" + "0" * 64}, "wrong key"),
                              ({"apikey": KEY[:-1] + ("1" if KEY[-1] == "0" else "0")}, "wrong secret")]:
            r = await c.post(URL, json=body, headers={"Accept": "application/json, text/event-stream", **headers})
            check(r.status_code == 401, f"{what} is refused with 401: {r.status_code} {r.text}")
            check(r.headers.get("www-authenticate", "").lower().startswith("bearer"),
                  f"{what}: the 401 names its scheme in WWW-Authenticate: {dict(r.headers)}")
    # The official client fails to connect with a wrong key, too.
    connected = False
    try:
        async with http_client("legacy", key="ak_000000000000_" + "0" * 64) as client:
            await client.list_tools()
            connected = True
    except Exception as e:  # noqa: BLE001 - any failure to connect is the point
        print(f"the client with a wrong key failed as it should: {e!r}"[:300], flush=True)
    check(not connected, "the official client cannot connect with a wrong key")


async def scoped_calls(mode):
    async with http_client(mode) as client:
        print(f"{mode}: protocol {client.protocol_version}", flush=True)
        listed = await client.list_tools()
        check(names(listed) == ["pay.add", "pay.echo"], f"{mode}: the key sees exactly pay's tools: {names(listed)}")
        add = next(t for t in listed.tools if t.name == "pay.add")
        check(add.description == "Adds a and b", f"{mode}: the description is the manifest's: {add.description}")
        check(add.input_schema.get("required") == ["a", "b"], f"{mode}: the input schema is the action's: {add.input_schema}")
        check(add.output_schema == {"type": "object", "properties": {"sum": {"type": "number"}}},
              f"{mode}: a declared output schema is the tool's: {add.output_schema}")
        echo = next(t for t in listed.tools if t.name == "pay.echo")
        check(echo.output_schema is None, f"{mode}: no output schema declared, none shown: {echo.output_schema}")
        check(echo.input_schema == {"type": "object"}, f"{mode}: no schema is an object schema: {echo.input_schema}")

        r = await client.call_tool("pay.add", {"a": 20, "b": 22})
        check(not r.is_error and r.structured_content == {"sum": 42}, f"{mode}: pay.add runs the action: {r}")
        check(json.loads(text_of(r)) == {"sum": 42}, f"{mode}: the text content is the result's JSON: {text_of(r)}")

        r = await client.call_tool("pay.add", {"a": "twenty", "b": 22})
        check(r.is_error and "data.a" in text_of(r), f"{mode}: a schema-violating argument is a tool error naming it: {r}")

        r = await client.call_tool("pay.echo", {"x": [1, 2]})
        check(not r.is_error and r.structured_content["echo"] == {"x": [1, 2]}, f"{mode}: pay.echo echoes: {r}")

        for name in ["other.add", "other.echo", "nothing.add", "pay.nope"]:
            try:
                r = await client.call_tool(name, {"a": 1, "b": 2})
                raise AssertionError(f"{mode}: {name} was callable: {r}")
            except MCPError as e:
                check("no tool" in str(e), f"{mode}: {name} is not callable: {e}")


async def list_changed_and_stdio():
    """A session over HTTP and one over stdio are open while `late` is installed: both
    hear `notifications/tools/list_changed`, and stdio's fresh list shows late's tools."""
    heard = {"http": asyncio.Event(), "stdio": asyncio.Event()}

    def on(which):
        async def handler(msg):
            if isinstance(msg, types.ServerNotification) and getattr(msg, "method", "") == "notifications/tools/list_changed":
                heard[which].set()
            elif getattr(getattr(msg, "root", None), "method", "") == "notifications/tools/list_changed":
                heard[which].set()
        return handler

    async with http_client("legacy", on_message=on("http")) as web, stdio_client(on_message=on("stdio")) as local:
        all_tools = names(await local.list_tools())
        check(all_tools == ["other.add", "other.echo", "pay.add", "pay.echo"], f"stdio: every installed addon's tools: {all_tools}")
        r = await local.call_tool("other.add", {"a": 2, "b": 3})
        check(not r.is_error and r.structured_content == {"sum": 5}, f"stdio: other.add runs: {r}")
        r = await local.call_tool("other.add", {"a": 2})
        check(r.is_error and "b" in text_of(r), f"stdio: a missing argument is a tool error naming it: {text_of(r)}")
        await web.list_tools()

        await asyncio.to_thread(ctl, "addons", "install", "late", "--wait", "--timeout", "180")
        await asyncio.wait_for(heard["stdio"].wait(), 60)
        check(True, "stdio: list_changed after an install")
        await asyncio.wait_for(heard["http"].wait(), 60)
        check(True, "http session: list_changed after an install")
        now = names(await local.list_tools())
        check("late.add" in now and "late.echo" in now, f"stdio: the fresh list shows the new addon: {now}")
        scoped = names(await web.list_tools())
        check(scoped == ["pay.add", "pay.echo"], f"http: the key still sees only pay: {scoped}")


async def registered_tools():
    ctl("mcp", "tools", "create", "calculate_sum", "--addon", "pay", "--action", "add", "--description", "Sum of a and b")
    ctl("mcp", "tools", "create", "echo_path", "--function-url", "/gw/pay/execute/echo")
    ctl("mcp", "tools", "create", "other_sum", "--addon", "other", "--action", "add")
    bad = ctl("mcp", "tools", "create", "evil", "--function-url", "https://evil.example/gw/pay/x", ok=False)
    check(bad.returncode == 1 and "functionUrl" in bad.stderr, f"a foreign functionUrl is refused naming it: {bad.stderr}")
    listed = json.loads(ctl("--json", "mcp", "tools", "list").stdout)
    check(sorted(t["name"] for t in listed) == ["calculate_sum", "echo_path", "other_sum"], f"registered tools listed: {listed}")

    async with http_client("auto") as client:
        seen = names(await client.list_tools())
        check(seen == ["calculate_sum", "echo_path", "pay.add", "pay.echo"], f"the key sees pay's registered tools only: {seen}")
        r = await client.call_tool("calculate_sum", {"a": 1, "b": 2})
        check(not r.is_error and r.structured_content == {"sum": 3}, f"a registered action tool runs: {r}")
        r = await client.call_tool("calculate_sum", {"a": 1})
        check(r.is_error and "b" in text_of(r), f"its schema is checked: {text_of(r)}")
        r = await client.call_tool("echo_path", {"hello": "world"})
        check(not r.is_error and r.structured_content["echo"] == {"hello": "world"}, f"a registered path tool runs: {r}")
        try:
            await client.call_tool("other_sum", {"a": 1, "b": 2})
            raise AssertionError("other_sum was callable with pay's key")
        except MCPError as e:
            check("no tool" in str(e), f"a registered tool of another addon is not callable: {e}")

        ctl("mcp", "tools", "delete", "calculate_sum")
        seen = names(await client.list_tools())
        check("calculate_sum" not in seen, f"a deleted tool is gone: {seen}")
        try:
            await client.call_tool("calculate_sum", {"a": 1, "b": 2})
            raise AssertionError("a deleted tool was callable")
        except MCPError as e:
            check("no tool" in str(e), f"a deleted tool is not callable: {e}")


async def main():
    await refused_without_a_valid_key()
    await scoped_calls("legacy")
    await scoped_calls("auto")
    await list_changed_and_stdio()
    await registered_tools()
    print("all MCP checks passed", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as e:  # noqa: BLE001
        print(f"FAILED: {e!r}", file=sys.stderr, flush=True)
        raise
