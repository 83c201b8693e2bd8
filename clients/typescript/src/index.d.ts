// Types of the engram client. Field names are those of engram's OpenAPI
// document (`/openapi.json`; `docs/openapi.json` in the repository).

export type Kind = "fact" | "message" | "document_chunk" | "summary";
export type State = "pending" | "ready" | "failed";
export type SearchMode = "hybrid" | "vector" | "keyword";
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A filter as in the README's Filters section, e.g. `{"metadata.topic": "ops"}`. */
export type Filter = { [field: string]: Json };

export interface EngramOptions {
  /** Default: `ENGRAM_URL`, else `http://127.0.0.1:8080`. */
  url?: string;
  /** Default: `ENGRAM_API_KEY`. */
  apiKey?: string;
  /** Used when a call names none. */
  namespace?: string;
  /** Retries of a 503 / 429 / refused connection (default 3). */
  maxRetries?: number;
  /** Per request (default 60,000). */
  timeoutMs?: number;
  /** Another `fetch` (default: the global one). */
  fetch?: typeof fetch;
}

export interface SessionRef {
  id: string;
  position: number;
  speaker?: string | null;
}

export interface Memory {
  id: string;
  namespace: string;
  text: string;
  kind: Kind;
  metadata: { [key: string]: Json };
  tags: string[];
  state: State;
  client_id?: string | null;
  session?: SessionRef | null;
  occurred_at: string;
  created_at: string;
  updated_at: string;
  expires_at?: string | null;
  legal_hold: boolean;
  embedding_model?: string | null;
  embedding_version?: string | null;
}

export interface MemoryInput {
  text: string;
  kind?: Kind;
  metadata?: { [key: string]: Json };
  tags?: string[];
  client_id?: string;
  occurred_at?: string;
  expires_at?: string;
  ttl_seconds?: number;
}

export interface Created {
  id: string;
  /** `created`, or `duplicate` when the existing live memory was returned. */
  status: "created" | "duplicate";
  state: State;
}

export interface Appended extends Created {
  position: number;
}

export interface Scores {
  fused: number;
  vector?: number | null;
  keyword?: number | null;
  vector_rank?: number | null;
  keyword_rank?: number | null;
  recency?: number | null;
}

export interface Hit {
  id: string;
  namespace: string;
  text: string;
  kind: Kind;
  metadata: { [key: string]: Json };
  tags: string[];
  occurred_at: string;
  created_at: string;
  session?: SessionRef | null;
  scores: Scores;
  neighbors?: Array<{ id: string; text: string; session: SessionRef }> | null;
}

export interface Source extends Hit {
  index: number;
}

export interface Citation {
  index: number;
  id: string;
  namespace: string;
}

export interface Timings {
  retrieval_ms: number;
  first_token_ms?: number | null;
  total_ms: number;
}

export interface Answer {
  answer: string;
  model: string;
  citations: Citation[];
  sources: Source[];
  timings: Timings;
}

export type AskEvent =
  | { type: "sources"; model: string; sources: Source[] }
  | { type: "token"; text: string }
  | { type: "done"; answer: string; model: string; citations: Citation[]; timings: Timings };

export interface Page {
  memories: Memory[];
  next_cursor?: string | null;
}

export interface AuditEvent {
  tenant: string;
  n: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  request_id?: string | null;
  details: Json;
  prev_hash: string;
  hash: string;
}

export interface SearchOptions {
  namespaces?: string[];
  filter?: Filter;
  k?: number;
  mode?: SearchMode;
  weights?: { vector: number; keyword: number };
  recency?: { half_life_days: number; weight?: number; origin?: string };
  expand?: { neighbors: number };
  exact?: boolean;
}

export interface AskOptions {
  namespaces?: string[];
  filter?: Filter;
  k?: number;
  mode?: SearchMode;
  max_tokens?: number;
  temperature?: number;
}

export class EngramError extends Error {
  status: number;
  /** engram's stable error code, e.g. `invalid_namespace`, `forbidden`. */
  code: string;
  requestId?: string;
  /** Seconds, from `Retry-After`. */
  retryAfter?: number;
  constructor(status: number, code: string, message: string, extra?: { requestId?: string; retryAfter?: number });
}
export class BadRequestError extends EngramError {}
export class AuthenticationError extends EngramError {}
export class PermissionDeniedError extends EngramError {}
export class NotFoundError extends EngramError {}
export class ConflictError extends EngramError {}
export class RateLimitError extends EngramError {}
export class UnavailableError extends EngramError {}
export class ConnectionFailed extends EngramError {}
export function errorFrom(status: number, body: unknown, extra?: { requestId?: string; retryAfter?: number }): EngramError;

export class Engram {
  constructor(options?: EngramOptions);
  namespace?: string;
  maxRetries: number;

  add(text: string, options?: Omit<MemoryInput, "text"> & { namespace?: string; wait?: boolean }): Promise<Created>;
  addMany(memories: Array<string | MemoryInput>, options?: { namespace?: string; wait?: boolean }): Promise<Created[]>;
  get(id: string): Promise<Memory>;
  update(
    id: string,
    fields: {
      text?: string;
      kind?: Kind;
      metadata?: { [key: string]: Json };
      tags?: string[];
      expires_at?: string;
      legal_hold?: boolean;
      wait?: boolean;
    },
  ): Promise<Memory>;
  delete(id: string, options?: { hard?: boolean }): Promise<void>;
  restore(id: string): Promise<Memory>;
  list(options?: { namespace?: string; filter?: Filter; limit?: number; cursor?: string; sort?: string }): Promise<Page>;
  iterMemories(options?: { namespace?: string; filter?: Filter; sort?: string; pageSize?: number }): AsyncGenerator<Memory>;

  search(query: string, options?: SearchOptions): Promise<Hit[]>;
  ask(question: string, options?: AskOptions): Promise<Answer>;
  askStream(question: string, options?: AskOptions): AsyncGenerator<AskEvent>;

  appendMessages(
    session: string,
    messages: Array<string | (MemoryInput & { speaker?: string; position?: number })>,
    options?: { namespace?: string; wait?: boolean },
  ): Promise<Appended[]>;
  sessionMessages(
    session: string,
    options?: { namespace?: string; after?: number; limit?: number },
  ): Promise<{ messages: Memory[]; next_after?: number | null }>;
  deleteSession(session: string, options?: { namespace?: string }): Promise<{ deleted: number; held: number }>;

  audit(options?: {
    after?: number;
    limit?: number;
    action?: string;
    actor?: string;
    target?: string;
    since?: string;
    until?: string;
  }): Promise<{ events: AuditEvent[]; next_after?: number | null }>;
  iterAudit(options?: {
    after?: number;
    pageSize?: number;
    action?: string;
    actor?: string;
    target?: string;
    since?: string;
    until?: string;
  }): AsyncGenerator<AuditEvent>;
  namespaces(): Promise<Array<{ name: string; created_at: string; memories: number; default_ttl_seconds?: number | null }>>;
  stats(): Promise<{ [key: string]: Json }>;
  request(method: string, path: string, options?: { query?: { [key: string]: unknown }; body?: unknown }): Promise<unknown>;
}
