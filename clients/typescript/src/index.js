// The engram client for Node 20+ (and any runtime with `fetch`): typed by
// `index.d.ts`, written as plain ES modules so it needs no build step and
// no dependency. Rules shared by every call live once in `#send` (headers,
// error mapping, retries on 503/429 honouring `Retry-After`); answers keep
// the OpenAPI document's field names (`/openapi.json`).

const DEFAULT_URL = "http://127.0.0.1:8080";
const RETRY_STATUSES = new Set([429, 503]);
const MAX_WAIT_MS = 60_000;

/** Any error answered by engram: `status`, engram's stable `code`, `message`. */
export class EngramError extends Error {
  constructor(status, code, message, { requestId, retryAfter } = {}) {
    super(`${status} ${code}: ${message}`);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}
/** 400, 413, 414, 415, 422, 431: the request is invalid; do not retry it. */
export class BadRequestError extends EngramError {}
/** 401: no, an unknown, a revoked or an expired credential. */
export class AuthenticationError extends EngramError {}
/** 403: the credential's role or namespaces do not allow the call. */
export class PermissionDeniedError extends EngramError {}
/** 404: no such memory, namespace, session, job or key. */
export class NotFoundError extends EngramError {}
/** 409: `conflict`, `position_conflict` or `legal_hold`. */
export class ConflictError extends EngramError {}
/** 429: too many requests; `retryAfter` (seconds) says when to come back. */
export class RateLimitError extends EngramError {}
/** 502, 503, 504: a back-end is down; nothing was applied, retry later. */
export class UnavailableError extends EngramError {}
/** engram could not be reached (status 0, code `connection_failed`). */
export class ConnectionFailed extends EngramError {}

const BY_STATUS = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: BadRequestError,
  414: BadRequestError,
  415: BadRequestError,
  422: BadRequestError,
  429: RateLimitError,
  431: BadRequestError,
  502: UnavailableError,
  503: UnavailableError,
  504: UnavailableError,
};

/** The error for an answer: engram's `{"error": {"code", "message"}}`, or the bare status. */
export function errorFrom(status, body, extra = {}) {
  let code = `http_${status}`;
  let message = "unexpected answer";
  if (body && typeof body === "object" && body.error && typeof body.error === "object") {
    code = String(body.error.code ?? code);
    message = String(body.error.message ?? message);
  } else if (typeof body === "string" && body) {
    message = body.slice(0, 500);
  }
  const Cls = BY_STATUS[status] ?? EngramError;
  return new Cls(status, code, message, extra);
}

function retryAfterSeconds(headers) {
  const value = headers.get("retry-after");
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isNaN(when) ? undefined : Math.max(0, (when - Date.now()) / 1000);
}

/** Milliseconds before retry `attempt` (from 1): the server's `Retry-After`, else backoff with jitter. */
function waitMs(attempt, retryAfter) {
  if (retryAfter !== undefined) return Math.min(retryAfter * 1000, MAX_WAIT_MS);
  return Math.min(250 * 2 ** (attempt - 1) * (1 + Math.random()), MAX_WAIT_MS);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const seg = (value) => encodeURIComponent(String(value));
const items = (list) => list.map((m) => (typeof m === "string" ? { text: m } : { ...m }));

function compact(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) out[k] = v;
  return out;
}

function queryString(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    q.set(k, typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function errorOf(response) {
  const text = await response.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return errorFrom(response.status, body, {
    requestId: response.headers.get("x-request-id") ?? undefined,
    retryAfter: retryAfterSeconds(response.headers),
  });
}

/** Decodes server-sent events from a byte stream into `{event, data}` objects. */
async function* sseEvents(body) {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data = [];
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
        event = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
      }
    }
  }
}

export class Engram {
  #url;
  #headers;
  #fetch;
  #timeoutMs;

  /**
   * @param {import("./index.d.ts").EngramOptions} [options]
   */
  constructor(options = {}) {
    const env = globalThis.process?.env ?? {};
    this.#url = (options.url ?? env.ENGRAM_URL ?? DEFAULT_URL).replace(/\/+$/, "");
    const key = options.apiKey ?? env.ENGRAM_API_KEY;
    if (!key) throw new TypeError("no API key: pass apiKey or set ENGRAM_API_KEY");
    this.namespace = options.namespace;
    this.maxRetries = options.maxRetries ?? 3;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#headers = {
      authorization: `Bearer ${key}`,
      "user-agent": "engram-client-js/0.1",
    };
  }

  #ns(namespace) {
    const ns = namespace ?? this.namespace;
    if (!ns) throw new TypeError("no namespace: pass namespace or set one on the client");
    return ns;
  }

  #namespaces(namespaces) {
    if (namespaces?.length) return [...namespaces];
    return this.namespace ? [this.namespace] : undefined;
  }

  /** One HTTP exchange with retries; answers the `Response` of the last attempt (status < 400). */
  async #exchange(method, path, { query, body } = {}) {
    const url = this.#url + path + queryString(query);
    for (let attempt = 1; ; attempt++) {
      let response;
      try {
        response = await this.#fetch(url, {
          method,
          headers: body === undefined ? this.#headers : { ...this.#headers, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
      } catch (e) {
        // fetch rejects when the connection fails (or the timeout fires).
        if (attempt > this.maxRetries || e?.name === "TimeoutError") {
          throw new ConnectionFailed(0, "connection_failed", String(e?.cause?.message ?? e?.message ?? e));
        }
        await sleep(waitMs(attempt, undefined));
        continue;
      }
      if (RETRY_STATUSES.has(response.status) && attempt <= this.maxRetries) {
        await response.body?.cancel();
        await sleep(waitMs(attempt, retryAfterSeconds(response.headers)));
        continue;
      }
      if (response.status >= 400) throw await errorOf(response);
      return response;
    }
  }

  async #send(method, path, options) {
    const response = await this.#exchange(method, path, options);
    const text = await response.text();
    return text ? JSON.parse(text) : undefined;
  }

  // -- memories -----------------------------------------------------------

  /** Store one memory; with `wait: true` it is searchable when this resolves. */
  add(text, { namespace, wait, ...fields } = {}) {
    return this.#send("POST", "/v1/memories", {
      query: { wait },
      body: compact({ namespace: this.#ns(namespace), text, ...fields }),
    });
  }

  /** Store several memories (texts or objects) in one namespace, in one transaction. */
  async addMany(memories, { namespace, wait } = {}) {
    const out = await this.#send("POST", "/v1/memories", {
      query: { wait },
      body: { namespace: this.#ns(namespace), memories: items(memories) },
    });
    return out.memories;
  }

  get(id) {
    return this.#send("GET", `/v1/memories/${seg(id)}`);
  }

  /** Change the given fields of a memory; a new text is embedded again. */
  update(id, { wait, ...fields } = {}) {
    return this.#send("PATCH", `/v1/memories/${seg(id)}`, { query: { wait }, body: compact(fields) });
  }

  /** Soft delete (restorable) unless `hard: true`. */
  async delete(id, { hard } = {}) {
    await this.#send("DELETE", `/v1/memories/${seg(id)}`, { query: { hard } });
  }

  restore(id) {
    return this.#send("POST", `/v1/memories/${seg(id)}/restore`);
  }

  /** One page of memories; pass `next_cursor` back as `cursor`. */
  list({ namespace, filter, limit, cursor, sort } = {}) {
    return this.#send("POST", "/v1/memories/list", {
      body: compact({ namespace: namespace ?? this.namespace, filter, limit, cursor, sort }),
    });
  }

  /** Every memory matching, page by page. */
  async *iterMemories({ pageSize = 100, ...options } = {}) {
    let cursor;
    do {
      const page = await this.list({ ...options, limit: pageSize, cursor });
      yield* page.memories;
      cursor = page.next_cursor;
    } while (cursor);
  }

  // -- retrieval ----------------------------------------------------------

  /** The `k` best memories for `query` (hybrid by default), with score breakdowns. */
  async search(query, { namespaces, ...options } = {}) {
    const out = await this.#send("POST", "/v1/search", {
      body: compact({ query, namespaces: this.#namespaces(namespaces), ...options }),
    });
    return out.hits;
  }

  /** A grounded answer with citations through the configured LLM server. */
  ask(question, { namespaces, ...options } = {}) {
    return this.#send("POST", "/v1/ask", {
      body: compact({ question, namespaces: this.#namespaces(namespaces), ...options, stream: false }),
    });
  }

  /** The answer as it is generated: `sources`, then `token`s, then `done`. */
  async *askStream(question, { namespaces, ...options } = {}) {
    const response = await this.#exchange("POST", "/v1/ask", {
      body: compact({ question, namespaces: this.#namespaces(namespaces), ...options, stream: true }),
    });
    for await (const { event, data } of sseEvents(response.body)) {
      if (event === "error") throw errorFrom(502, data);
      if (event === "sources" || event === "token" || event === "done") yield { type: event, ...data };
    }
  }

  // -- conversations ------------------------------------------------------

  /** Append messages (texts or `{speaker, text, ...}`) to a session, in order. */
  async appendMessages(session, messages, { namespace, wait } = {}) {
    const out = await this.#send("POST", `/v1/sessions/${seg(session)}/messages`, {
      query: { wait },
      body: { namespace: this.#ns(namespace), messages: items(messages) },
    });
    return out.messages;
  }

  sessionMessages(session, { namespace, after, limit } = {}) {
    return this.#send("GET", `/v1/sessions/${seg(session)}/messages`, {
      query: { namespace: this.#ns(namespace), after, limit },
    });
  }

  deleteSession(session, { namespace } = {}) {
    return this.#send("DELETE", `/v1/sessions/${seg(session)}`, { query: { namespace: this.#ns(namespace) } });
  }

  // -- administration -----------------------------------------------------

  /** One page of the audit log (filters: action, actor, target, since, until). */
  audit(options = {}) {
    return this.#send("GET", "/v1/audit", { query: options });
  }

  /** Every audit event after `after`, oldest first. */
  async *iterAudit({ after, pageSize = 100, ...filters } = {}) {
    for (;;) {
      const page = await this.audit({ ...filters, after, limit: pageSize });
      yield* page.events;
      if (page.next_after === undefined || page.next_after === null) return;
      after = page.next_after;
    }
  }

  async namespaces() {
    return (await this.#send("GET", "/v1/namespaces")).namespaces;
  }

  stats() {
    return this.#send("GET", "/v1/stats");
  }

  /** Any other route, with the client's credentials, retries and errors. */
  request(method, path, { query, body } = {}) {
    return this.#send(method, path, { query, body });
  }
}
