"""engram-client against a real `engram serve` (started by the Rust test
`crates/engram/tests/clients.rs`, which sets ENGRAM_URL, ENGRAM_API_KEY (a
writer), ENGRAM_ADMIN_KEY and ENGRAM_READER_KEY). The retry tests alone use
a fake server: they inject 503 answers, which a healthy node never gives.

    PYTHONPATH=clients/python/src python -m unittest discover -s clients/python/tests
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import os
import threading
import time
import unittest
import uuid

from engram_client import (
    Answer,
    AuditEvent,
    Citation,
    Hit,
    Memory,
    Scores,
    SessionRef,
    AskDone,
    AskSources,
    AskToken,
    AsyncEngram,
    AuthenticationError,
    BadRequestError,
    ConnectionFailed,
    Created,
    Engram,
    EngramError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

URL = os.environ.get("ENGRAM_URL", "http://127.0.0.1:8080")
HAS_LLM = os.environ.get("ENGRAM_TEST_LLM") == "1"


def fresh_namespace() -> str:
    return f"py-{uuid.uuid4().hex[:12]}"


class SyncClient(unittest.TestCase):
    def setUp(self) -> None:
        self.ns = fresh_namespace()
        # The key comes from ENGRAM_API_KEY, as for a user.
        self.engram = Engram(URL, namespace=self.ns)
        self.addCleanup(self.engram.close)

    def test_add_then_search_finds_it_with_a_score_breakdown(self) -> None:
        created = self.engram.add(
            "The user's cat is called Miso and sleeps on the radiator",
            metadata={"source": "chat", "turn": 3},
            tags=["pets"],
            wait=True,
        )
        self.assertIsInstance(created, Created)
        self.assertEqual((created.status, created.state), ("created", "ready"))
        again = self.engram.add("The user's cat is called Miso and sleeps on the radiator", wait=True)
        self.assertEqual((again.id, again.status), (created.id, "duplicate"))
        self.engram.add("The office moved to the fourth floor in March", wait=True)

        hits = self.engram.search("what is the name of the cat?", k=2)
        self.assertIsInstance(hits[0], Hit)
        self.assertEqual(hits[0].id, created.id)
        self.assertEqual(hits[0].metadata, {"source": "chat", "turn": 3})
        self.assertEqual(hits[0].tags, ["pets"])
        self.assertGreater(hits[0].scores.fused, hits[1].scores.fused)
        self.assertEqual(hits[0].scores.vector_rank, 1)

        keyword = self.engram.search("radiator", mode="keyword", filter={"tags": "pets"})
        self.assertEqual([h.id for h in keyword], [created.id])
        self.assertIsNone(keyword[0].scores.vector)

        memory = self.engram.get(created.id)
        self.assertIsInstance(memory, Memory)
        self.assertEqual((memory.namespace, memory.state, memory.kind), (self.ns, "ready", "fact"))
        self.assertIsNotNone(memory.created_at.tzinfo)

    def test_update_delete_restore_and_not_found(self) -> None:
        created = self.engram.add("Standup is at 9:30", wait=True)
        updated = self.engram.update(created.id, text="Standup is at 10:00", tags=["schedule"], wait=True)
        self.assertEqual((updated.text, updated.tags, updated.state), ("Standup is at 10:00", ["schedule"], "ready"))
        self.assertEqual(self.engram.search("when is standup", k=1)[0].text, "Standup is at 10:00")

        self.assertIsNone(self.engram.delete(created.id))
        with self.assertRaises(NotFoundError) as err:
            self.engram.get(created.id)
        self.assertEqual((err.exception.status, err.exception.code), (404, "memory_not_found"))
        self.assertEqual(self.engram.restore(created.id).id, created.id)
        self.assertEqual(self.engram.get(created.id).text, "Standup is at 10:00")

    def test_batches_and_pagination_walk_every_memory_once(self) -> None:
        texts = [f"Fact number {i} about the garden" for i in range(7)]
        created = self.engram.add_many(texts[:5] + [{"text": t, "tags": ["late"]} for t in texts[5:]], wait=True)
        self.assertEqual([c.status for c in created], ["created"] * 7)
        page = self.engram.list(limit=3)
        self.assertEqual(len(page.memories), 3)
        self.assertIsNotNone(page.next_cursor)
        walked = list(self.engram.iter_memories(page_size=3))
        self.assertEqual([m.id for m in walked], [c.id for c in created])
        late = list(self.engram.iter_memories(filter={"tags": "late"}, page_size=1))
        self.assertEqual([m.text for m in late], texts[5:])

    def test_conversation_sessions(self) -> None:
        appended = self.engram.append_messages(
            "s1",
            [{"speaker": "user", "text": "I am flying to Lisbon on Friday"}, {"speaker": "assistant", "text": "Noted"}],
            wait=True,
        )
        self.assertEqual([a.position for a in appended], [0, 1])
        page = self.engram.session_messages("s1")
        self.assertEqual([m.session.speaker for m in page["messages"]], ["user", "assistant"])
        hits = self.engram.search("where is the user travelling?", k=1)
        self.assertEqual((hits[0].session.id, hits[0].session.position), ("s1", 0))
        self.assertEqual(self.engram.delete_session("s1"), {"deleted": 2, "held": 0})

    def test_errors_carry_engrams_code(self) -> None:
        with self.assertRaises(BadRequestError) as err:
            self.engram.add("x", namespace="not a namespace!")
        self.assertEqual((err.exception.status, err.exception.code), (400, "invalid_namespace"))
        self.assertTrue(err.exception.request_id)

        reader = Engram(URL, api_key=os.environ["ENGRAM_READER_KEY"], namespace=self.ns)
        self.addCleanup(reader.close)
        with self.assertRaises(PermissionDeniedError) as err:
            reader.add("a reader cannot write")
        self.assertEqual(err.exception.code, "forbidden")

        stranger = Engram(URL, api_key="engram_not_a_key", namespace=self.ns)
        self.addCleanup(stranger.close)
        with self.assertRaises(AuthenticationError) as err:
            stranger.search("anything")
        self.assertEqual(err.exception.status, 401)

        with self.assertRaises(ValueError):
            Engram(URL, api_key="")

    def test_audit_iterates_in_order_across_pages(self) -> None:
        admin = Engram(URL, api_key=os.environ["ENGRAM_ADMIN_KEY"])
        self.addCleanup(admin.close)
        for i in range(3):
            self.engram.add(f"Audited fact {i}")
        events = list(admin.iter_audit(page_size=2, action="create"))
        self.assertGreaterEqual(len(events), 3)
        numbers = [e.n for e in events]
        self.assertEqual(numbers, sorted(set(numbers)))
        self.assertTrue(all(e.action == "create" for e in events))

    @unittest.skipUnless(HAS_LLM, "needs the test LLM server (ENGRAM_TEST_LLM=1)")
    def test_ask_and_ask_stream(self) -> None:
        fact = self.engram.add("The wifi password of the cabin is heron42", wait=True)
        answer = self.engram.ask("What is the wifi password of the cabin?", k=3)
        self.assertIsInstance(answer, Answer)
        self.assertIn(fact.id, [s.id for s in answer.sources])
        self.assertTrue(answer.answer)
        self.assertTrue({c.id for c in answer.citations} <= {s.id for s in answer.sources})

        events = list(self.engram.ask_stream("What is the wifi password of the cabin?", k=3))
        self.assertIsInstance(events[0], AskSources)
        self.assertIn(fact.id, [s.id for s in events[0].sources])
        self.assertIsInstance(events[-1], AskDone)
        tokens = [e.text for e in events if isinstance(e, AskToken)]
        self.assertTrue(tokens)
        self.assertEqual("".join(tokens), events[-1].answer)


class AsyncClient(unittest.TestCase):
    def test_the_same_calls_awaited(self) -> None:
        ns = fresh_namespace()

        async def run() -> None:
            async with AsyncEngram(URL, namespace=ns) as engram:
                created = await engram.add_many(["Alice leads the data team", "Bob runs payroll"], wait=True)
                hits = await engram.search("who runs payroll?", k=1)
                self.assertEqual(hits[0].id, created[1].id)
                self.assertEqual((await engram.get(created[0].id)).text, "Alice leads the data team")
                walked = [m.id async for m in engram.iter_memories(page_size=1)]
                self.assertEqual(walked, [c.id for c in created])
                with self.assertRaises(NotFoundError):
                    await engram.get(str(uuid.uuid4()))
                if HAS_LLM:
                    events = [e async for e in engram.ask_stream("Who leads the data team?", k=2)]
                    self.assertIsInstance(events[0], AskSources)
                    self.assertIsInstance(events[-1], AskDone)

        asyncio.run(run())


class FlakyServer(http.server.ThreadingHTTPServer):
    """A fake engram for failure injection: answers 503 with `Retry-After: 1`
    `failures` times, then a valid search answer."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _FlakyHandler)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests += 1
        if self.server.requests <= self.server.failures:
            body = {"error": {"code": "store_unavailable", "message": "the store is down"}}
            self.send_response(503)
            self.send_header("retry-after", "1")
        else:
            body = {"hits": [], "mode": "hybrid"}
            self.send_response(200)
        data = json.dumps(body).encode()
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


OPENAPI = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "openapi.json")


class InStepWithTheOpenApiDocument(unittest.TestCase):
    """The typed models name only fields the API documents, and every field
    the API always sends (so a renamed or new required field fails here)."""

    def test_models_match_their_schemas(self) -> None:
        with open(OPENAPI) as f:
            schemas = json.load(f)["components"]["schemas"]

        def properties(name: str) -> tuple:
            schema = schemas[name]
            props, required = dict(schema.get("properties", {})), set(schema.get("required", []))
            for part in schema.get("allOf", []):
                part = schemas[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part
                props.update(part.get("properties", {}))
                required |= set(part.get("required", []))
            return set(props), required

        models = {
            Memory: "MemoryView",
            Created: "Appended",
            Hit: "Source",
            Scores: "Fused",
            Citation: "Citation",
            SessionRef: "SessionRef",
            Answer: "Answer",
            AuditEvent: "AuditEvent",
        }
        for model, schema in models.items():
            fields = {f.name for f in dataclasses.fields(model)} - {"raw"}
            documented, required = properties(schema)
            self.assertLessEqual(fields, documented, f"{model.__name__} names fields {schema} does not have")
            # The model may leave out what it does not type (kept in `raw`),
            # but not what the API always sends, except these on purpose:
            untyped = {"pii", "provenance", "embedding_model", "embedding_version", "tenant"}
            self.assertLessEqual(required - untyped, fields, f"{model.__name__} misses required fields of {schema}")


class Retries(unittest.TestCase):
    def serve(self, failures: int) -> FlakyServer:
        server = FlakyServer(failures)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def test_a_503_is_retried_after_the_servers_retry_after(self) -> None:
        server = self.serve(failures=2)
        client = Engram(f"http://127.0.0.1:{server.server_address[1]}", api_key="k", namespace="n")
        self.addCleanup(client.close)
        started = time.monotonic()
        self.assertEqual(client.search("q"), [])
        self.assertEqual(server.requests, 3)
        # Two waits of the server's Retry-After (1 s), not the client's backoff.
        self.assertGreaterEqual(time.monotonic() - started, 1.9)

    def test_retries_give_up_with_the_servers_code(self) -> None:
        server = self.serve(failures=10)
        client = Engram(f"http://127.0.0.1:{server.server_address[1]}", api_key="k", namespace="n", max_retries=1)
        self.addCleanup(client.close)
        with self.assertRaises(UnavailableError) as err:
            client.search("q")
        self.assertEqual((err.exception.status, err.exception.code), (503, "store_unavailable"))
        self.assertEqual(err.exception.retry_after, 1.0)
        self.assertEqual(server.requests, 2)

    def test_the_async_client_retries_too(self) -> None:
        server = self.serve(failures=1)

        async def run() -> None:
            async with AsyncEngram(f"http://127.0.0.1:{server.server_address[1]}", api_key="k") as client:
                self.assertEqual(await client.search("q"), [])

        asyncio.run(run())
        self.assertEqual(server.requests, 2)

    def test_an_unreachable_server_is_a_connection_error(self) -> None:
        client = Engram("http://127.0.0.1:9", api_key="k", max_retries=1)
        self.addCleanup(client.close)
        with self.assertRaises(ConnectionFailed) as err:
            client.stats()
        self.assertIsInstance(err.exception, EngramError)
        self.assertEqual(err.exception.code, "connection_failed")


if __name__ == "__main__":
    unittest.main()
