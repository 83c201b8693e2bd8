// engram-client against a real `engram serve`, started by the Rust test
// `crates/engram/tests/clients.rs`, which sets ENGRAM_URL, ENGRAM_API_KEY
// (a writer), ENGRAM_ADMIN_KEY, ENGRAM_READER_KEY and ENGRAM_TEST_LLM=1.
// The retry tests alone use a fake server: they inject 503 answers, which
// a healthy node never gives.
//
//   ENGRAM_URL=... ENGRAM_API_KEY=... node --test clients/typescript/test/
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { randomUUID } from "node:crypto";
import {
  Engram,
  EngramError,
  AuthenticationError,
  BadRequestError,
  ConnectionFailed,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
} from "../src/index.js";

const url = process.env.ENGRAM_URL ?? "http://127.0.0.1:8080";
const hasLlm = process.env.ENGRAM_TEST_LLM === "1";
const freshNamespace = () => `js-${randomUUID().slice(0, 12)}`;

describe("against a real node", () => {
  test("add, then search finds it with a score breakdown", async () => {
    // The key comes from ENGRAM_API_KEY, as for a user.
    const engram = new Engram({ url, namespace: freshNamespace() });
    const created = await engram.add("The user's cat is called Miso and sleeps on the radiator", {
      metadata: { source: "chat", turn: 3 },
      tags: ["pets"],
      wait: true,
    });
    assert.equal(created.status, "created");
    assert.equal(created.state, "ready");
    const again = await engram.add("The user's cat is called Miso and sleeps on the radiator", { wait: true });
    assert.deepEqual([again.id, again.status], [created.id, "duplicate"]);
    await engram.add("The office moved to the fourth floor in March", { wait: true });

    const hits = await engram.search("what is the name of the cat?", { k: 2 });
    assert.equal(hits[0].id, created.id);
    assert.deepEqual(hits[0].metadata, { source: "chat", turn: 3 });
    assert.ok(hits[0].scores.fused > hits[1].scores.fused);
    assert.equal(hits[0].scores.vector_rank, 1);

    const keyword = await engram.search("radiator", { mode: "keyword", filter: { tags: "pets" } });
    assert.deepEqual(
      keyword.map((h) => h.id),
      [created.id],
    );
    assert.equal((await engram.get(created.id)).state, "ready");
  });

  test("update, delete, restore and not found", async () => {
    const engram = new Engram({ url, namespace: freshNamespace() });
    const created = await engram.add("Standup is at 9:30", { wait: true });
    const updated = await engram.update(created.id, { text: "Standup is at 10:00", tags: ["schedule"], wait: true });
    assert.deepEqual([updated.text, updated.tags, updated.state], ["Standup is at 10:00", ["schedule"], "ready"]);
    assert.equal(await engram.delete(created.id), undefined);
    await assert.rejects(engram.get(created.id), (e) => {
      assert.ok(e instanceof NotFoundError);
      assert.deepEqual([e.status, e.code], [404, "memory_not_found"]);
      return true;
    });
    assert.equal((await engram.restore(created.id)).id, created.id);
  });

  test("batches and pagination walk every memory once", async () => {
    const engram = new Engram({ url, namespace: freshNamespace() });
    const texts = Array.from({ length: 7 }, (_, i) => `Fact number ${i} about the garden`);
    const created = await engram.addMany([...texts.slice(0, 5), ...texts.slice(5).map((text) => ({ text, tags: ["late"] }))], {
      wait: true,
    });
    assert.equal(created.length, 7);
    const page = await engram.list({ limit: 3 });
    assert.equal(page.memories.length, 3);
    assert.ok(page.next_cursor);
    const walked = [];
    for await (const m of engram.iterMemories({ pageSize: 3 })) walked.push(m.id);
    assert.deepEqual(
      walked,
      created.map((c) => c.id),
    );
    const late = [];
    for await (const m of engram.iterMemories({ filter: { tags: "late" }, pageSize: 1 })) late.push(m.text);
    assert.deepEqual(late, texts.slice(5));
  });

  test("conversation sessions", async () => {
    const engram = new Engram({ url, namespace: freshNamespace() });
    const appended = await engram.appendMessages(
      "s1",
      [
        { speaker: "user", text: "I am flying to Lisbon on Friday" },
        { speaker: "assistant", text: "Noted" },
      ],
      { wait: true },
    );
    assert.deepEqual(
      appended.map((a) => a.position),
      [0, 1],
    );
    const page = await engram.sessionMessages("s1");
    assert.deepEqual(
      page.messages.map((m) => m.session.speaker),
      ["user", "assistant"],
    );
    const [hit] = await engram.search("where is the user travelling?", { k: 1 });
    assert.deepEqual([hit.session.id, hit.session.position], ["s1", 0]);
    assert.deepEqual(await engram.deleteSession("s1"), { deleted: 2, held: 0 });
  });

  test("errors carry engram's code", async () => {
    const engram = new Engram({ url });
    await assert.rejects(engram.add("x", { namespace: "not a namespace!" }), (e) => {
      assert.ok(e instanceof BadRequestError && e instanceof EngramError);
      assert.deepEqual([e.status, e.code], [400, "invalid_namespace"]);
      assert.ok(e.requestId);
      return true;
    });
    const reader = new Engram({ url, apiKey: process.env.ENGRAM_READER_KEY, namespace: freshNamespace() });
    await assert.rejects(reader.add("a reader cannot write"), (e) => e instanceof PermissionDeniedError && e.code === "forbidden");
    const stranger = new Engram({ url, apiKey: "engram_not_a_key" });
    await assert.rejects(stranger.search("anything"), (e) => e instanceof AuthenticationError && e.status === 401);
    assert.throws(() => new Engram({ url, apiKey: "" }), TypeError);
  });

  test("the audit log iterates in order across pages", async () => {
    const engram = new Engram({ url, namespace: freshNamespace() });
    for (let i = 0; i < 3; i++) await engram.add(`Audited fact ${i}`);
    const admin = new Engram({ url, apiKey: process.env.ENGRAM_ADMIN_KEY });
    const events = [];
    for await (const e of admin.iterAudit({ pageSize: 2, action: "create" })) events.push(e);
    assert.ok(events.length >= 3);
    const numbers = events.map((e) => e.n);
    assert.deepEqual(numbers, [...new Set(numbers)].sort((a, b) => a - b));
    assert.ok(events.every((e) => e.action === "create"));
  });

  test("ask and askStream", { skip: !hasLlm && "needs the test LLM (ENGRAM_TEST_LLM=1)" }, async () => {
    const engram = new Engram({ url, namespace: freshNamespace() });
    const fact = await engram.add("The wifi password of the cabin is heron42", { wait: true });
    const answer = await engram.ask("What is the wifi password of the cabin?", { k: 3 });
    assert.ok(answer.sources.some((s) => s.id === fact.id));
    assert.ok(answer.answer.length > 0);
    const sourceIds = new Set(answer.sources.map((s) => s.id));
    assert.ok(answer.citations.every((c) => sourceIds.has(c.id)));

    const events = [];
    for await (const e of engram.askStream("What is the wifi password of the cabin?", { k: 3 })) events.push(e);
    assert.equal(events[0].type, "sources");
    assert.ok(events[0].sources.some((s) => s.id === fact.id));
    const done = events.at(-1);
    assert.equal(done.type, "done");
    const tokens = events.filter((e) => e.type === "token").map((e) => e.text);
    assert.ok(tokens.length > 0);
    assert.equal(tokens.join(""), done.answer);
  });
});

/** A fake engram for failure injection: 503 with `Retry-After: 1` `failures` times, then a search answer. */
async function flakyServer(t, failures) {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      state.requests += 1;
      if (state.requests <= failures) {
        res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
        res.end(JSON.stringify({ error: { code: "store_unavailable", message: "the store is down" } }));
      } else {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ hits: [], mode: "hybrid" }));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => server.close());
  state.url = `http://127.0.0.1:${server.address().port}`;
  return state;
}

describe("retries (fake server)", () => {
  test("a 503 is retried after the server's Retry-After", async (t) => {
    const server = await flakyServer(t, 2);
    const started = Date.now();
    const client = new Engram({ url: server.url, apiKey: "k", namespace: "n" });
    assert.deepEqual(await client.search("q"), []);
    assert.equal(server.requests, 3);
    // Two waits of the server's Retry-After (1 s), not the client's backoff.
    assert.ok(Date.now() - started >= 1900);
  });

  test("retries give up with the server's code", async (t) => {
    const server = await flakyServer(t, 10);
    const client = new Engram({ url: server.url, apiKey: "k", namespace: "n", maxRetries: 1 });
    await assert.rejects(client.search("q"), (e) => {
      assert.ok(e instanceof UnavailableError);
      assert.deepEqual([e.status, e.code, e.retryAfter], [503, "store_unavailable", 1]);
      return true;
    });
    assert.equal(server.requests, 2);
  });

  test("an unreachable server is a connection error", async () => {
    const client = new Engram({ url: "http://127.0.0.1:9", apiKey: "k", maxRetries: 1 });
    await assert.rejects(client.stats(), (e) => e instanceof ConnectionFailed && e.code === "connection_failed");
  });
});
