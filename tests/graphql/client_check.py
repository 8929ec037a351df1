"""Drives addond's /graphql with a real GraphQL client (`gql`, with its aiohttp and
websockets transports): on the gateway with an API key covering `pay` (queries, a widget
render, executeAddonFunction against the addon's container, refusals of other addons'
data, of mutations and of introspection, the alias limit), and on the admin socket itself
(the client speaks HTTP and WebSocket over the Unix socket): schema introspection,
installAddon and updateAddonConfig, the depth limit, and the `events` subscription over
graphql-transport-ws replaying from the log and then following live. Run by
tests/graphql.rs against a real daemon with the sample addon installed as `pay` and `other`
and registered (not installed) as `late`; every check that fails raises, and the exit code
is not 0.

Environment: GQL_GATEWAY (the gateway's /graphql URL), GQL_KEY (a key whose grant covers
`pay`), ADDOND_SOCKET (the daemon's admin socket).
"""

import asyncio
import json
import os
import time

import aiohttp
import websockets
from websockets.asyncio.client import unix_connect
from gql import Client, GraphQLRequest, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

GATEWAY = os.environ["GQL_GATEWAY"]
KEY = os.environ["GQL_KEY"]
SOCKET = os.environ["ADDOND_SOCKET"]
# Over the Unix socket: the host part is only the Host header.
ADMIN = "http://localhost/graphql"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what[:200]}", flush=True)


def gateway_client(key=KEY):
    return Client(transport=AIOHTTPTransport(url=GATEWAY, headers={"apikey": key}), execute_timeout=120)


def admin_client(fetch_schema=False):
    transport = AIOHTTPTransport(url=ADMIN, client_session_args={"connector": aiohttp.UnixConnector(path=SOCKET)})
    return Client(transport=transport, fetch_schema_from_transport=fetch_schema, execute_timeout=120)


def ws_client(subprotocol=WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL):
    transport = WebsocketsTransport(
        url="ws://localhost/graphql",
        connect_args={"unix": True, "path": SOCKET},
        subprotocols=[subprotocol],
    )
    return Client(transport=transport, execute_timeout=120)


async def expect_error(session, request, code, *words):
    """The first error of `request` has `code` and every word in its message."""
    try:
        result = await session.execute(request)
    except TransportQueryError as e:
        err = e.errors[0]
        got = err.get("extensions", {}).get("code")
        check(got == code and all(w in err["message"] for w in words), f"{code} {words}: {err}")
        return err
    raise AssertionError(f"expected {code}, got {result}")


async def raw(url, body, headers=None, unix=False, method="POST"):
    """A request without the client, for what the client would refuse to send."""
    connector = aiohttp.UnixConnector(path=SOCKET) if unix else None
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.request(method, url, data=data, headers={"content-type": "application/json", **(headers or {})}) as r:
            return r.status, await r.json(content_type=None)


async def emit(name, data):
    status, body = await raw("http://localhost/api/events", {"name": name, "data": data}, unix=True)
    assert status == 201, body
    return body["data"]["id"]


async def gateway_checks():
    async with gateway_client() as s:
        q = gql("""
            query Pay($config: JSON) {
              addon(id: "pay") {
                id name version installed phase
                apis { name inputSchema }
                widgets { id name addonId category render(config: $config, context: {order: "A-1"}) { html css javascript etag cached } }
              }
            }""")
        r = await s.execute(GraphQLRequest(q, variable_values={"config": {"title": "Hello GraphQL"}}))
        a = r["addon"]
        check(a["id"] == "pay" and a["name"] == "pay" and a["version"] == "1.0.0" and a["installed"], f"addon(id: pay): {a}")
        check({"add", "echo"} <= {x["name"] for x in a["apis"]}, f"apis: {a['apis']}")
        w = a["widgets"][0]
        check(w["id"] == "checkout" and w["addonId"] == "pay" and w["category"] == "form", f"widget: {w['id']}")
        out = w["render"]
        check("Hello GraphQL" in out["html"] and "A-1" in out["html"] and out["css"] and out["etag"].startswith('"'), f"render: {out['html']}")
        again = (await s.execute(GraphQLRequest(q, variable_values={"config": {"title": "Hello GraphQL"}})))["addon"]["widgets"][0]["render"]
        check(again["cached"] and again["etag"] == out["etag"], "the same render again comes from the widget cache")

        run = gql("query Run($data: JSON) { executeAddonFunction(addonId: \"pay\", function: \"add\", data: $data) }")
        r = await s.execute(GraphQLRequest(run, variable_values={"data": {"a": 2, "b": 3.5}}))
        check(r["executeAddonFunction"] == {"sum": 5.5}, f"executeAddonFunction add: {r}")
        r = await s.execute(gql('{ executeAddonFunction(addonId: "pay--prod", function: "echo", data: {x: [1, 2]}) }'))
        check(r["executeAddonFunction"]["echo"] == {"x": [1, 2]}, f"echo through the grant's environment name: {r}")
        err = await expect_error(s, GraphQLRequest(run, variable_values={"data": {"a": "two", "b": 1}}), "validation_failed")
        check(err["extensions"].get("status") == 400, f"the REST status rides along: {err}")
        await expect_error(s, gql('{ executeAddonFunction(addonId: "pay", function: "nope") }'), "not_found", "known actions")

        # Other addons' data is out of this key's reach.
        await expect_error(s, gql('{ addon(id: "other") { id } }'), "forbidden", "`pay`")
        await expect_error(s, gql('{ executeAddonFunction(addonId: "other", function: "echo") }'), "forbidden")
        await expect_error(s, gql('{ addon(id: "pay--dev") { id } }'), "forbidden")
        r = await s.execute(gql("{ widgets { id addonId } }"))
        check(r["widgets"] == [{"id": "checkout", "addonId": "pay"}], f"widgets: only the key's addon: {r}")
        r = await s.execute(gql('{ widgets(category: "display") { id } }'))
        check(r["widgets"] == [], "widgets of another category: none")
        await expect_error(s, gql('{ widgets(category: "nope") { id } }'), "validation_failed", "category")

        # Read and execute only.
        await expect_error(s, gql('mutation { installAddon(id: "late") { id } }'), "forbidden", "queries only", "admin socket")
        await expect_error(s, gql("subscription { events { id } }"), "forbidden", "subscriptions")
        await expect_error(s, gql("{ __schema { types { name } } }"), "forbidden", "graphql.gateway_introspection")

        many = "{ " + " ".join(f'a{i}: addon(id: "pay") {{ id }}' for i in range(31)) + " }"
        await expect_error(s, gql(many), "invalid_graphql", "31 aliased fields", "graphql.max_aliases")
        thirty = "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }"
        r = await s.execute(gql(thirty))
        check(len(r) == 30, "30 aliases are within the default limit")

    # What the client would not send, and what comes before GraphQL.
    key = {"apikey": KEY}
    status, body = await raw(GATEWAY, {"query": '{ addon(id: "pay" { id } }'}, key)
    check(status == 200 and body["errors"][0]["extensions"]["code"] == "invalid_graphql", f"a syntax error: {body}")
    status, body = await raw(GATEWAY, {"query": '{ addon(id: "pay") { nope } }'}, key)
    e = body["errors"][0]
    check(e["extensions"]["code"] == "invalid_graphql" and "nope" in e["message"], f"an unknown field: {e}")
    status, body = await raw(GATEWAY, {"query": 1}, key)
    check(status == 400 and body["error"]["code"] == "invalid_json", f"a body that is not a GraphQL request: {body}")
    status, body = await raw(GATEWAY, {"query": "{ __typename }"})
    check(status == 401 and body["error"]["code"] == "missing_api_key", f"no key: {body}")
    status, body = await raw(GATEWAY, {"query": "{ __typename }"}, {"apikey": "ak_nope_nope"})
    check(status == 401 and body["error"]["code"] == "invalid_api_key", f"a bad key: {body}")
    status, body = await raw(GATEWAY, "", key, method="GET")
    check(status == 405 and body["error"]["code"] == "method_not_allowed", f"GET on the gateway: {body}")


async def admin_checks():
    # The client fetches the schema by introspection (within the default depth limit) and
    # checks every request against it before sending.
    async with admin_client(fetch_schema=True) as s:
        r = await s.execute(gql('{ addon(id: "other") { id name installed apis { name } } }'))
        check(r["addon"]["id"] == "other" and r["addon"]["installed"], f"admin: any addon: {r}")
        r = await s.execute(gql('{ addon(id: "late") { id installed phase widgets { id } } }'))
        check(r["addon"] == {"id": "late", "installed": False, "phase": None, "widgets": [{"id": "checkout"}]}, f"a registered addon: {r}")
        check("installAddon" in str(s.client.schema.mutation_type.fields), "the schema has the mutations")

        install = gql("mutation Install($config: JSON) { installAddon(id: \"late\", config: $config) { id installed config } }")
        r = await s.execute(GraphQLRequest(install, variable_values={"config": {"greeting": "hi"}}))
        check(r["installAddon"] == {"id": "late", "installed": True, "config": {"greeting": "hi"}}, f"installAddon: {r}")
        deadline = time.monotonic() + 150
        phase = None
        while time.monotonic() < deadline:
            phase = (await s.execute(gql('{ addon(id: "late") { phase } }')))["addon"]["phase"]
            if phase == "Started":
                break
            await asyncio.sleep(0.5)
        check(phase == "Started", f"the installed addon started: {phase}")
        r = await s.execute(gql('{ executeAddonFunction(addonId: "late", function: "echo", data: {n: 1}) }'))
        check(r["executeAddonFunction"]["echo"] == {"n": 1}, f"the new instance answers: {r}")

        update = gql("mutation Update($config: JSON!) { updateAddonConfig(id: \"pay\", config: $config) { id config } }")
        r = await s.execute(GraphQLRequest(update, variable_values={"config": {"greeting": "hej"}}))
        check(r["updateAddonConfig"] == {"id": "pay", "config": {"greeting": "hej"}}, f"updateAddonConfig: {r}")
        await expect_error(s, GraphQLRequest(update, variable_values={"config": {"greeting": 5}}), "validation_failed", "greeting")
        await expect_error(s, gql('mutation { updateAddonConfig(id: "nope", config: {}) { id } }'), "not_found")
        await expect_error(s, gql('mutation { installAddon(id: "late") { id } }'), "conflict")

    # Limits and clear errors, as the server answers them.
    ty = "name " + "ofType { " * 20 + "name" + " }" * 20
    status, body = await raw(ADMIN, {"query": '{ __type(name: "Addon") { fields { type { ' + ty + " } } } }"}, unix=True)
    e = body["errors"][0]
    check(status == 200 and e["extensions"]["code"] == "invalid_graphql" and "nested too deep" in e["message"], f"depth limit: {e}")
    status, body = await raw(ADMIN, {"query": "subscription { events { id } }"}, unix=True)
    check(body["errors"][0]["extensions"]["code"] == "invalid_graphql", f"a subscription by POST: {body}")
    status, body = await raw(ADMIN, "", unix=True, method="GET")
    check(status == 400 and "WebSocket" in body["error"]["message"], f"GET without an upgrade: {body}")


async def subscription_checks():
    first = await emit("gqltest.one", {"n": 1})
    await emit("gqlother.skip", {"n": 0})
    second = await emit("gqltest.two", {"n": 2})

    client = ws_client()
    async with client as s:
        check(client.transport.subprotocol == "graphql-transport-ws", "the server speaks graphql-transport-ws")
        sub = gql("subscription Follow($after: Int) { events(names: [\"gqltest.*\"], afterId: $after) { id name data source timestamp } }")
        seen = []
        async def follow():
            async for r in s.subscribe(GraphQLRequest(sub, variable_values={"after": first - 1})):
                seen.append(r["events"])
                if len(seen) == 2:
                    # Replayed both; what comes next arrives live.
                    await emit("gqlother.skip", {"n": 0})
                    await emit("gqltest.three", {"n": 3})
                if len(seen) == 3:
                    return
        await asyncio.wait_for(follow(), 60)
        check([e["name"] for e in seen] == ["gqltest.one", "gqltest.two", "gqltest.three"], f"replayed, then live: {seen}")
        check(seen[0]["id"] == first and seen[1]["id"] == second and seen[2]["id"] > second, "in log order, by id")
        check(seen[2]["data"] == {"n": 3} and seen[0]["source"].startswith("admin") and seen[0]["timestamp"], f"event fields: {seen[2]}")

        # Without afterId: from now on only.
        live = gql('subscription { events(names: ["gqltest.live"]) { id name } }')
        async def only_new():
            async for r in s.subscribe(live):
                return r["events"]
        async def keep_emitting():
            while True:
                await emit("gqltest.live", {})
                await asyncio.sleep(0.3)
        emitter = asyncio.create_task(keep_emitting())
        try:
            got = await asyncio.wait_for(only_new(), 60)
        finally:
            emitter.cancel()
        check(got["name"] == "gqltest.live" and got["id"] > seen[2]["id"], f"no replay without afterId: {got}")

        try:
            async for _ in s.subscribe(gql('subscription { events(names: ["Not A Name"]) { id } }')):
                raise AssertionError("a bad pattern was accepted")
        except TransportQueryError as e:
            err = e.errors[0]
            check(err["extensions"]["code"] == "validation_failed" and err["extensions"]["field"] == "names[0]", f"a bad pattern: {err}")

    # The older subprotocol too, for clients that speak only it.
    client = ws_client(WebsocketsTransport.APOLLO_SUBPROTOCOL)
    async with client as s:
        check(client.transport.subprotocol == "graphql-ws", "graphql-ws is served too")
        sub = gql("subscription Again($after: Int) { events(names: [\"gqltest.one\"], afterId: $after) { id } }")
        async def one():
            async for r in s.subscribe(GraphQLRequest(sub, variable_values={"after": 0})):
                return r["events"]["id"]
        check(await asyncio.wait_for(one(), 60) == first, "graphql-ws replays too")

    # A WebSocket without a GraphQL subprotocol is refused; a silent one is closed (4408).
    try:
        async with unix_connect(SOCKET, "ws://localhost/graphql"):
            raise AssertionError("an upgrade without a subprotocol was accepted")
    except websockets.exceptions.InvalidStatus as e:
        check(e.response.status_code == 400, f"no subprotocol: {e.response.status_code}")
    started = time.monotonic()
    async with unix_connect(SOCKET, "ws://localhost/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 30)
            raise AssertionError("the server sent something before connection_init")
        except websockets.exceptions.ConnectionClosed as e:
            check(e.rcvd is not None and e.rcvd.code == 4408, f"silent client closed: {e.rcvd}")
    check(9 <= time.monotonic() - started < 20, "after the 10 s the protocol allows")


async def main():
    await gateway_checks()
    await admin_checks()
    await subscription_checks()
    print("all GraphQL checks passed", flush=True)


asyncio.run(main())
