"""engram's MCP tools through the official `mcp` Python SDK, over both
transports: streamable HTTP at /mcp and stdio (`engram mcp`). Run by
tests/clients.rs against a real `engram serve`; exits non-zero (with a
traceback) on the first failed check.

Environment: ENGRAM_URL, ENGRAM_BIN (the engram binary), and keys:
ENGRAM_WRITER_KEY (unscoped writer), ENGRAM_READER_KEY (reader),
ENGRAM_SCOPED_KEY (writer limited to namespaces team:*).
"""

import asyncio
import json
import os

import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["ENGRAM_URL"]
BIN = os.environ["ENGRAM_BIN"]
WRITER = os.environ["ENGRAM_WRITER_KEY"]
READER = os.environ["ENGRAM_READER_KEY"]
SCOPED = os.environ["ENGRAM_SCOPED_KEY"]
TOOLS = {
    "add_memory", "search_memory", "get_memory", "update_memory",
    "delete_memory", "list_memories", "append_messages", "ask",
}


def http(key, namespace=None):
    """A session factory over streamable HTTP as `key`."""
    url = f"{URL}/mcp" + (f"?namespace={namespace}" if namespace else "")
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return client, streamable_http_client(url, http_client=client)


async def call(session, tool, args):
    """(ok, structured content) of a tool call."""
    r = await session.call_tool(tool, args)
    data = r.structured_content
    if data is None:
        data = json.loads(r.content[0].text)
    return (not r.is_error), data


async def exercise(session, namespace, label):
    init = await session.initialize()
    assert init.server_info.name == "engram", init.server_info
    names = {t.name for t in (await session.list_tools()).tools}
    assert TOOLS <= names, names
    add = next(t for t in (await session.list_tools()).tools if t.name == "add_memory")
    assert "memories" in add.input_schema["properties"], add.input_schema

    text = f"The {label} deploy window is Thursday 14:00 UTC, approved by Mira"
    ok, out = await call(session, "add_memory", {"memories": [
        {"text": text, "metadata": {"source": label}, "tags": ["ops"]},
    ]})
    assert ok, out
    mid = out["memories"][0]["id"]
    assert out["memories"][0]["status"] == "created", out

    # Stored in the connection's default namespace, searchable at once.
    ok, out = await call(session, "search_memory", {"query": f"when is the {label} deploy window"})
    assert ok, out
    assert out["hits"][0]["id"] == mid, out
    assert out["hits"][0]["namespace"] == namespace, out

    ok, out = await call(session, "get_memory", {"id": mid})
    assert ok and out["text"] == text and out["metadata"]["source"] == label, out

    ok, out = await call(session, "update_memory", {"id": mid, "text": text.replace("14:00", "16:00")})
    assert ok and "16:00" in out["text"], out

    ok, out = await call(session, "list_memories", {"filter": {"metadata.source": label}})
    assert ok and [m["id"] for m in out["memories"]] == [mid], out

    ok, out = await call(session, "append_messages", {"session": f"{label}-chat", "messages": [
        {"speaker": "user", "text": "Remind me to renew the TLS certificate on Friday"},
        {"speaker": "assistant", "text": "Noted: renew the TLS certificate on Friday."},
    ]})
    assert ok and len(out["messages"]) == 2, out

    # engram's errors are tool errors with engram's code.
    ok, out = await call(session, "get_memory", {"id": "00000000-0000-0000-0000-000000000000"})
    assert not ok and out["error"]["code"] == "memory_not_found", out
    ok, out = await call(session, "get_memory", {"id": "not-a-uuid"})
    assert not ok and out["error"]["code"], out

    ok, out = await call(session, "delete_memory", {"id": mid})
    assert ok and out == {"deleted": mid}, out
    ok, out = await call(session, "get_memory", {"id": mid})
    assert not ok and out["error"]["code"] == "memory_not_found", out
    return names


async def over_http():
    client, transport = http(WRITER, "agent:http")
    async with client, transport as (read, write, *_), ClientSession(read, write) as s:
        await exercise(s, "agent:http", "http")
        # RAG through the test suite's LLM: an answer grounded in sources.
        await call(s, "add_memory", {"memories": [{"text": "The office espresso machine is broken since Monday"}]})
        ok, out = await call(s, "ask", {"question": "What is broken in the office?", "k": 3})
        assert ok and isinstance(out.get("answer"), str) and out["answer"].strip(), out

    # A reader can search but not write.
    client, transport = http(READER, "agent:http")
    async with client, transport as (read, write, *_), ClientSession(read, write) as s:
        await s.initialize()
        ok, out = await call(s, "search_memory", {"query": "espresso machine"})
        assert ok and out["hits"], out
        ok, out = await call(s, "add_memory", {"memories": [{"text": "readers cannot write"}]})
        assert not ok and out["error"]["code"] == "forbidden", out

    # A key scoped to team:* sees only its namespaces, through MCP too.
    client, transport = http(SCOPED)
    async with client, transport as (read, write, *_), ClientSession(read, write) as s:
        await s.initialize()
        ok, out = await call(s, "add_memory", {"namespace": "team:infra", "memories": [
            {"text": "The infra team's espresso budget is 40 euros a month"}]})
        assert ok, out
        ok, out = await call(s, "search_memory", {"query": "espresso"})
        assert ok and out["hits"], out
        assert {h["namespace"] for h in out["hits"]} == {"team:infra"}, out
        ok, out = await call(s, "search_memory", {"query": "espresso", "namespaces": ["agent:http"]})
        assert not ok and out["error"]["code"] == "forbidden", out
        ok, out = await call(s, "add_memory", {"namespace": "agent:http", "memories": [{"text": "x y z"}]})
        assert not ok and out["error"]["code"] == "forbidden", out
        # No namespace and no default: a clear tool error, nothing stored.
        ok, out = await call(s, "add_memory", {"memories": [{"text": "where does this go"}]})
        assert not ok and out["error"]["code"] == "invalid_request", out

    # No credentials: refused at the door with the API's 401.
    r = httpx2.post(f"{URL}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "unauthenticated", r.text


async def over_stdio():
    params = StdioServerParameters(
        command=BIN,
        args=["mcp", "--url", URL, "--namespace", "agent:stdio"],
        env={**os.environ, "ENGRAM_API_KEY": WRITER},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await exercise(s, "agent:stdio", "stdio")
    params = StdioServerParameters(
        command=BIN,
        args=["mcp", "--url", URL, "--namespace", "agent:stdio"],
        env={**os.environ, "ENGRAM_API_KEY": READER},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        ok, out = await call(s, "add_memory", {"memories": [{"text": "readers cannot write"}]})
        assert not ok and out["error"]["code"] == "forbidden", out


asyncio.run(over_http())
asyncio.run(over_stdio())
print("ok")
