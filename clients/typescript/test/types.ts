// Compile-only check of the published types (src/index.d.ts), run by
// tests/clients.rs with `tsc --noEmit --strict`: every call an agent makes,
// typed as the README shows it, and mistakes the types must refuse.
import {
  Engram,
  EngramError,
  NotFoundError,
  type AskEvent,
  type Created,
  type Hit,
  type Memory,
  type Page,
} from "../src/index.js";

export async function usage(engram: Engram): Promise<void> {
  const created: Created = await engram.add("The user prefers tea", {
    metadata: { topic: "drinks", priority: 2, tags: ["a"] },
    tags: ["prefs"],
    wait: true,
  });
  const status: "created" | "duplicate" = created.status;
  const many: Created[] = await engram.addMany(["a", { text: "b", kind: "fact" }], { namespace: "ns" });
  const hits: Hit[] = await engram.search("what does the user drink?", {
    k: 3,
    mode: "hybrid",
    filter: { "metadata.topic": "drinks" },
    recency: { half_life_days: 30 },
  });
  const fused: number = hits[0].scores.fused;
  const rank: number | null | undefined = hits[0].scores.vector_rank;
  const memory: Memory = await engram.get(created.id);
  const when: string = memory.created_at;
  const page: Page = await engram.list({ limit: 10 });
  for await (const m of engram.iterMemories({ pageSize: 2 })) {
    const position: number | undefined = m.session?.position;
    void position;
  }
  for await (const event of engram.askStream("q")) {
    const e: AskEvent = event;
    if (e.type === "token") {
      const text: string = e.text;
      void text;
    } else if (e.type === "done") {
      const cited: string[] = e.citations.map((c) => c.id);
      void cited;
    }
  }
  const answer = await engram.ask("q", { k: 2, max_tokens: 64 });
  const sourceIndex: number = answer.sources[0].index;
  const appended = await engram.appendMessages("s1", [{ speaker: "user", text: "hi" }]);
  const at: number = appended[0].position;
  for await (const ev of engram.iterAudit({ action: "create" })) {
    const n: number = ev.n;
    void n;
  }
  try {
    await engram.get("missing");
  } catch (err) {
    if (err instanceof NotFoundError) {
      const code: string = err.code;
      void code;
    } else if (err instanceof EngramError) {
      const retry: number | undefined = err.retryAfter;
      void retry;
    }
  }
  void [status, many, fused, rank, when, page, sourceIndex, at];

  // @ts-expect-error: modes are hybrid, vector or keyword
  await engram.search("q", { mode: "semantic" });
  // @ts-expect-error: a memory needs text
  await engram.addMany([{ tags: ["x"] }]);
  // @ts-expect-error: ids are strings
  await engram.get(42);
}

new Engram({ url: "http://127.0.0.1:8080", apiKey: "egk_x", namespace: "agent", maxRetries: 1 });
