// Types of matchd-client (matchd.js).

export type Transport = "ws" | "sse" | "auto";

export interface MatchdClientOptions {
  /** Base URL (`http://host:port`, optionally with a path prefix); default the page's origin. */
  url?: string;
  /** A JWT (HS256, `sub` = the user id). */
  token?: string;
  /** Asked for a token when there is none and whenever the server refuses the current one. */
  getToken?: () => string | Promise<string>;
  /** Default "ws". "auto": WebSocket, or SSE when a WebSocket cannot be opened. */
  transport?: Transport;
  /** A WebSocket constructor with the browser's interface; default the global one. */
  WebSocket?: unknown;
  /** An EventSource constructor; default the global one, else a reader over fetch. */
  EventSource?: unknown;
  fetch?: typeof fetch;
  /** Default 250. */
  minBackoffMs?: number;
  /** Default 15000. */
  maxBackoffMs?: number;
  /** Default 10000; then the action rejects with code "timeout". */
  actionTimeoutMs?: number;
  /** Ping a WebSocket idle this long; reconnect when silent for twice as long. Default 20000; 0 = off. */
  pingIntervalMs?: number;
  /** Resume point to start from. */
  lastEventId?: number | null;
}

export interface Match {
  match_id: string;
  users: [string, string];
  created_at: number;
}

export interface Room {
  room_id: string;
  pool: string;
  users: string[];
  created_at: number;
  payload: Record<string, unknown>;
}

export interface MatchdEvent<T extends string = string, D = any> {
  id: number;
  type: T;
  data: D;
}

export type HelloEvent = MatchdEvent<
  "hello",
  { user: string; node: string; last_id: number; resumed_from: number | null; gap: boolean }
>;
export type MatchEvent = MatchdEvent<"match", { match: Match }>;
export type UnmatchedEvent = MatchdEvent<"unmatched", { match_id: string; by: string }>;
export type RoomAssignedEvent = MatchdEvent<"room_assigned", { room: Room }>;
export type RoomClosedEvent = MatchdEvent<"room_closed", { room_id: string; reason: string }>;
export type QueueUpdateEvent = MatchdEvent<"queue_update", { pool: string; position: number; estimated_wait_ms: number }>;
export interface ErrorEvent {
  id?: number;
  type: "error";
  ref?: unknown;
  data: { code: string; message: string; ref?: unknown };
}

export interface ConnectedInfo {
  transport: "ws" | "sse";
  hello: HelloEvent;
}

export interface DisconnectedInfo {
  /** WebSocket close code; 1006 when there was none; 1000 after close(); 4000 after reconnect(). */
  code: number;
  reason: string;
  willRetry: boolean;
  retryInMs?: number;
  /** The HTTP status that refused the stream, when known. */
  status?: number;
  transport?: "ws" | "sse";
}

export interface GapInfo {
  resumedFrom: number | null;
  lastId: number;
  hello: HelloEvent;
}

export interface ConnectingInfo {
  transport: "ws" | "sse";
  since: number | null;
  attempt: number;
}

export interface EventMap {
  hello: HelloEvent;
  match: MatchEvent;
  unmatched: UnmatchedEvent;
  room_assigned: RoomAssignedEvent;
  room_closed: RoomClosedEvent;
  queue_update: QueueUpdateEvent;
  error: ErrorEvent;
  connected: ConnectedInfo;
  disconnected: DisconnectedInfo;
  gap: GapInfo;
  connecting: ConnectingInfo;
  "*": MatchdEvent | ErrorEvent;
}

export interface SwipeAnswer {
  status: "pending" | "matched" | "passed";
  match: Match | null;
}
export type JoinAnswer =
  | { status: "queued"; pool: string; position: number; estimated_wait_ms: number }
  | { status: "matched"; room: Room };
export type LeaveAnswer = { status: "left"; pool: string } | { status: "not_queued" } | { status: "in_room"; room_id: string };
export interface SkipAnswer {
  status: "skipped";
  requeued: boolean;
}
export interface UnmatchAnswer {
  status: "unmatched";
}
export interface MatchesAnswer {
  matches: Match[];
}

export class MatchdError extends Error {
  constructor(code: string, message: string, status: number, extra?: { retryAfter?: number; cause?: unknown });
  /** The contract's snake_case code, or "timeout", "network_error", "disconnected". */
  code: string;
  /** The HTTP status (for WebSocket errors, the status of the code); 0 when nothing answered. */
  status: number;
  /** Seconds from Retry-After (429, 503). */
  retryAfter?: number;
}

export class MatchdClient {
  constructor(options: MatchdClientOptions);
  readonly lastEventId: number | null;
  readonly state: "idle" | "connecting" | "connected" | "reconnecting" | "closed";
  readonly transport: "ws" | "sse" | null;
  on<K extends keyof EventMap>(type: K, fn: (payload: EventMap[K]) => void): () => void;
  /** App-defined event types (published by the app's backend). */
  on(type: string, fn: (event: MatchdEvent) => void): () => void;
  connect(): Promise<HelloEvent>;
  reconnect(): Promise<HelloEvent>;
  close(): void;
  swipe(target: string, direction: "right" | "left", options?: { swipeId?: string }): Promise<SwipeAnswer>;
  unmatch(matchId: string): Promise<UnmatchAnswer>;
  joinQueue(ticket?: { pool?: string; rating?: number; region?: string; tags?: string[] }): Promise<JoinAnswer>;
  leaveQueue(): Promise<LeaveAnswer>;
  skip(roomId: string, options?: { requeue?: boolean }): Promise<SkipAnswer>;
  matches(): Promise<MatchesAnswer>;
}

export default MatchdClient;
