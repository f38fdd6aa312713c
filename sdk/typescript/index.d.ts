// Types of @opencode/client. The request bodies below carry the names of the daemon's
// /openapi.json schemas (components.schemas) and a test checks their fields against it.

// ---- request bodies (names and fields as in /openapi.json) ------------------------------------

export type PermissionRule = 'allow' | 'ask' | 'deny'
export type PermissionResponse = 'once' | 'always' | 'reject'

export interface SessionCreate {
  provider?: string
  model?: string
  /** A project id. */
  project?: string
  /** A path; registered as a project if new. */
  directory?: string
  title?: string
  /** Per-tool rules, e.g. `{bash: 'ask', write: 'allow'}`. */
  permission?: Record<string, PermissionRule>
}

export interface ProjectCreate {
  name: string
  path: string
}

export interface MessageCreate {
  parts: Part[]
  async?: boolean
  /** While a turn runs: queue the message behind it (202 with its place) instead of a 409. */
  queue?: boolean
}

export interface Queued {
  queued: true
  id: string
  position: number
  [field: string]: unknown
}

export interface PermissionAnswer {
  response: PermissionResponse
}

export interface PruneRequest {
  older_than_days: number
}

export interface RevertRequest {
  message_id: string
}

export interface ForkRequest {
  message_id?: string
}

// ---- answers -----------------------------------------------------------------------------------

export interface TextPart {
  type: 'text'
  text: string
}
export type Part = TextPart | { type: string; [field: string]: unknown }

export interface Health {
  status: string
  version?: string
  uptime?: number
  sessions_running?: number
  database?: unknown
  endpoints?: { tcp?: string | null; unix?: string | null }
  [field: string]: unknown
}

export interface Session {
  id: string
  created: number
  updated?: number
  provider: string | null
  model: string | null
  project?: string
  directory?: string
  title?: string
  status?: 'idle' | 'busy'
  permission?: Record<string, PermissionRule>
  [field: string]: unknown
}

export interface Message {
  id: string
  role: 'user' | 'assistant' | string
  created?: number
  parts: Part[]
  [field: string]: unknown
}

export interface Permission {
  id: string
  tool: string
  args: Record<string, unknown>
  created?: number
  [field: string]: unknown
}

export interface Provider {
  id: string
  name: string
  models: string[]
  [field: string]: unknown
}

export interface Model {
  id: string
  provider: string
  [field: string]: unknown
}

export interface Project {
  id: string
  name: string
  path: string
  created?: number
  [field: string]: unknown
}

export interface FileEntry {
  name: string
  path?: string
  type: 'file' | 'directory' | string
  size?: number
  [field: string]: unknown
}

export interface Accepted {
  message_id: string
  seq: number
  [field: string]: unknown
}

export type EventType =
  | 'text-delta'
  | 'message'
  | 'tool'
  | 'tool-call'
  | 'tool-result'
  | 'permission'
  | 'error'
  | 'complete'
  | 'todo'
  | 'compaction'
  | 'retry'
  | 'revert'
  | 'unrevert'
  | (string & {})

/** `retry` data: the model step failed before any output and is tried again after `delay_ms`
 * (`attempt` of `max_attempts`; `url` is the provider's base URL, never with a key). */
export interface RetryData {
  attempt: number
  max_attempts: number
  delay_ms: number
  reason: string
  provider: string
  url: string | null
}

/** One event of a session's log, the same shape from NDJSON, SSE and the WebSocket. `seq` is
 * missing only on WebSocket control answers (an `error` frame for a refused command). */
export interface Event<T = Record<string, unknown>> {
  type: EventType
  seq?: number
  data: T
}

/** Notices of `GET /events`: `session.created`, `session.deleted`, `session.status`,
 * `session.updated` (`title`: the model titled the session, config `titles: "model"`). */
export interface Notice {
  type: string
  seq?: number
  data: { type: string; session_id: string; [field: string]: unknown }
}

// ---- errors ------------------------------------------------------------------------------------

/** The one error class. `code` is the API's (`SESSION_NOT_FOUND`, `INVALID_REQUEST`, …) or, when
 * no answer came, `CONNECT_ERROR`, `CONNECTION_LOST`, `PROTOCOL_ERROR`, `CLIENT_ERROR`. */
export declare class OpenCodeError extends Error {
  constructor(
    message: string,
    options?: { code?: string; details?: Record<string, unknown>; status?: number; cause?: unknown },
  )
  readonly name: 'OpenCodeError'
  code: string
  details: Record<string, unknown>
  /** The HTTP status, when the daemon answered. */
  status?: number
  /** Seconds, from `Retry-After` on a 429. */
  retryAfter?: number
}

// ---- the client --------------------------------------------------------------------------------

export interface Signal {
  /** Cancels the call (or ends the stream) with the signal's reason, an `AbortError`. */
  signal?: AbortSignal
}

export interface ClientOptions {
  /** Default `$OPENCODE_TOKEN`, else the data dir's `token` file (Node); sent over TCP only. */
  token?: string
  /** How long (ms) a stream keeps trying to reconnect after a drop; default 30000. */
  reconnectTimeout?: number
}

export type MessageInput = { text: string; parts?: never } | { parts: Part[]; text?: never }

export interface Route {
  method: 'GET' | 'POST' | 'DELETE'
  path: string
  query?: readonly string[]
  body?: readonly string[]
  /** The index.d.ts interface of the body. */
  type?: string
}

/** Every route the SDK calls, by SDK method name. */
export declare const ROUTES: Readonly<Record<string, Route>>

export declare class OpenCodeClient {
  /**
   * @param url `http://…`, `https://…` or (Node) `unix:///path/to/opencoded.sock`. Default
   *   `$OPENCODE_URL`, else the default socket (`$OPENCODE_SOCKET`,
   *   `$XDG_RUNTIME_DIR/opencode/opencoded.sock`, `/tmp/opencode-$UID/opencoded.sock`).
   */
  constructor(url?: string, options?: ClientOptions)
  constructor(options: ClientOptions & { url?: string })
  /** `unix:///path` or the base URL this client talks to. */
  readonly url: string
  readonly sessions: Sessions
  readonly permissions: Permissions
  readonly projects: Projects
  readonly files: Files
  readonly mcp: Mcp
  health(options?: Signal): Promise<Health>
  openapi(options?: Signal): Promise<Record<string, unknown>>
  providers(options?: Signal): Promise<Provider[]>
  models(options?: Signal): Promise<Model[]>
  /** `GET /metrics`: Prometheus text. */
  metrics(options?: Signal): Promise<string>
  /** `GET /events`: session-level notices as they happen; reconnects after a drop. */
  events(options?: Signal & { onOpen?: () => void }): AsyncGenerator<Notice, void, undefined>
}

export interface Sessions {
  create(options?: SessionCreate & Signal): Promise<Session>
  /** One page, newest first; pass the last id as `before` for the next one. */
  list(options?: { limit?: number; before?: string; project?: string } & Signal): Promise<Session[]>
  get(sessionId: string, options?: Signal): Promise<Session>
  delete(sessionId: string, options?: Signal): Promise<void>
  prune(options: { olderThanDays: number } & Signal): Promise<{ deleted: string[] }>
  /** Cancel the running turn; false when none was running. */
  abort(sessionId: string, options?: Signal): Promise<boolean>
  messages(sessionId: string, options?: Signal): Promise<Message[]>
  /** Send a message; yields the turn's events as they arrive, `complete` last. */
  message(sessionId: string, input: MessageInput & Signal): AsyncGenerator<Event, void, undefined>
  /** Start a turn and return at once (202); follow it with events() or stream(). */
  submit(sessionId: string, input: MessageInput & Signal): Promise<Accepted>
  /** Like submit(), but queued behind a running turn instead of refused. */
  enqueue(sessionId: string, input: MessageInput & Signal): Promise<Accepted | Queued>
  /** Cancel a queued message that has not started. */
  cancelQueued(
    sessionId: string,
    queueId: string,
    options?: Signal,
  ): Promise<{ id: string; cancelled: true }>
  /** The event log over SSE from after `after` (default: live), reconnecting after a drop with
   * `after` = the last seq seen. */
  events(
    sessionId: string,
    options?: { after?: number; untilComplete?: boolean; onOpen?: () => void } & Signal,
  ): AsyncGenerator<Event, void, undefined>
  /** The WebSocket: events out, commands in; reconnects after a drop with `after=SEQ`. */
  stream(sessionId: string, options?: { after?: number } & Signal): SessionStream
  /** Summarise the history to free context. */
  compact(sessionId: string, options?: Signal): Promise<Record<string, unknown>>
  /** The session's changes as a unified diff (one turn's with `turn`). */
  diff(sessionId: string, options?: { turn?: string } & Signal): Promise<string>
  /** Undo the file changes from `messageId` on. */
  revert(sessionId: string, options: { messageId: string } & Signal): Promise<Record<string, unknown>>
  /** Redo what the last revert undid. */
  unrevert(sessionId: string, options?: Signal): Promise<Record<string, unknown>>
  /** A new session with this one's history (up to `messageId`). */
  fork(sessionId: string, options?: { messageId?: string } & Signal): Promise<Session>
  todo(sessionId: string, options?: Signal): Promise<unknown>
}

export interface Mcp {
  /** The configured MCP servers and their state. */
  list(options?: Signal): Promise<unknown>
  restart(name: string, options?: Signal): Promise<unknown>
}

export interface Permissions {
  /** Pending permission requests. */
  list(sessionId: string, options?: Signal): Promise<Permission[]>
  answer(
    sessionId: string,
    permissionId: string,
    response: PermissionResponse,
    options?: Signal,
  ): Promise<void>
  /** Same as answer() (the Python client's name). */
  respond(
    sessionId: string,
    permissionId: string,
    response: PermissionResponse,
    options?: Signal,
  ): Promise<void>
}

export interface Projects {
  list(options?: Signal): Promise<Project[]>
  create(options: ProjectCreate & Signal): Promise<Project>
  get(projectId: string, options?: Signal): Promise<Project>
  delete(projectId: string, options?: Signal): Promise<void>
}

export interface Files {
  /** Directory listing relative to the project root. */
  list(projectId: string, options?: { path?: string } & Signal): Promise<FileEntry[]>
  /** One file's text. */
  read(projectId: string, path: string, options?: Signal): Promise<string>
}

/** One session's WebSocket. Iterate it for events (leaving the loop closes the socket; iterating
 * again reconnects after `lastSeq`). It ends when the session is deleted. */
export declare class SessionStream implements AsyncIterable<Event> {
  /** The seq of the last event delivered. */
  lastSeq: number | undefined
  [Symbol.asyncIterator](): AsyncGenerator<Event, void, undefined>
  /** Resolves once the socket is open. */
  opened(): Promise<void>
  send(frame: Record<string, unknown>): Promise<void>
  message(content: string | MessageInput): Promise<void>
  abort(): Promise<void>
  permission(id: string, response: PermissionResponse): Promise<void>
  close(): void
}

/** Node only: the contract's endpoint rules. */
export declare function resolveEndpoint(
  url?: string,
  token?: string,
  env?: Record<string, string | undefined>,
): { socketPath?: string; url?: URL; display: string; token?: string; default?: boolean }
export declare function socketPath(env?: Record<string, string | undefined>): string
export declare function dataDir(env?: Record<string, string | undefined>): string
export declare function readToken(env?: Record<string, string | undefined>): string | undefined
