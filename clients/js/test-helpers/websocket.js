// A small WebSocket client (RFC 6455) with the browser's interface, for the tests on Node 20, which
// has no global WebSocket: `new TestWebSocket(url)`, `onopen`, `onmessage` ({data}), `onerror`,
// `onclose` ({code, reason, wasClean}), `send(text)`, `close(code, reason)`, `readyState`.
// Text frames only (what matchd sends); answers pings; a refused upgrade (any status but 101) or a
// network error is `error` then `close` with 1006, as in a browser.

import crypto from "node:crypto";
import http from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export class TestWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** Every instance made, so tests can inspect (or count) the sockets a client opened. */
  static opened = [];

  constructor(url) {
    this.url = url;
    this.readyState = TestWebSocket.CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    /** The status of a refused upgrade, for tests. */
    this.upgradeStatus = null;
    this._buf = Buffer.alloc(0);
    this._fragments = [];
    this._closeInfo = null;
    this._socket = null;
    this._fired = false;
    TestWebSocket.opened.push(this);
    const u = new URL(url);
    if (u.protocol !== "ws:") throw new SyntaxError(`only ws: URLs are supported, not ${u.protocol}`);
    const key = crypto.randomBytes(16).toString("base64");
    const req = http.request({
      host: u.hostname,
      port: u.port || 80,
      path: u.pathname + u.search,
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
      },
    });
    this._req = req;
    req.on("upgrade", (res, socket, head) => {
      const expected = crypto.createHash("sha1").update(key + GUID).digest("base64");
      if (res.headers["sec-websocket-accept"] !== expected || this.readyState !== TestWebSocket.CONNECTING) {
        socket.destroy();
        return this._fail();
      }
      this._socket = socket;
      socket.setNoDelay(true);
      this.readyState = TestWebSocket.OPEN;
      socket.on("data", (chunk) => this._data(chunk));
      socket.on("error", () => {});
      socket.on("close", () => this._finished());
      this._fire("onopen", { type: "open" });
      if (head && head.length) this._data(head);
    });
    req.on("response", (res) => {
      this.upgradeStatus = res.statusCode;
      res.resume();
      this._fail();
    });
    req.on("error", () => this._fail());
    req.end();
  }

  _fire(name, ev) {
    const fn = this[name];
    if (typeof fn === "function") fn.call(this, ev);
  }

  _fail() {
    if (this.readyState === TestWebSocket.CLOSED) return;
    this.readyState = TestWebSocket.CLOSED;
    // Browsers report failures asynchronously.
    setImmediate(() => {
      this._fire("onerror", { type: "error" });
      this._fire("onclose", { type: "close", code: 1006, reason: "", wasClean: false });
    });
  }

  _finished() {
    if (this._fired) return;
    this._fired = true;
    clearTimeout(this._closeTimer);
    this.readyState = TestWebSocket.CLOSED;
    const info = this._closeInfo;
    if (!info || !info.received) this._fire("onerror", { type: "error" });
    this._fire("onclose", {
      type: "close",
      code: info && info.received ? info.code : 1006,
      reason: info && info.received ? info.reason : "",
      wasClean: Boolean(info && info.received),
    });
  }

  _data(chunk) {
    this._buf = this._buf.length ? Buffer.concat([this._buf, chunk]) : chunk;
    for (;;) {
      const b = this._buf;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      let mask = null;
      if (masked) {
        if (b.length < off + 4) return;
        mask = b.subarray(off, off + 4);
        off += 4;
      }
      if (b.length < off + len) return;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this._buf = b.subarray(off + len);
      this._frame(fin, opcode, payload);
    }
  }

  _frame(fin, opcode, payload) {
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      this._fragments.push(payload);
      if (!fin) return;
      const data = Buffer.concat(this._fragments).toString("utf8");
      this._fragments = [];
      if (this.readyState === TestWebSocket.OPEN) this._fire("onmessage", { type: "message", data });
    } else if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.length > 2 ? payload.subarray(2).toString("utf8") : "";
      const answered = this._closeInfo !== null;
      this._closeInfo = { code, reason, received: true };
      if (!answered) this._send(0x8, payload.subarray(0, 2));
      this.readyState = TestWebSocket.CLOSING;
      this._socket.end();
      this._closeTimer = setTimeout(() => this._socket && this._socket.destroy(), 1000);
    } else if (opcode === 0x9) {
      this._send(0xa, payload);
    }
  }

  _send(opcode, payload) {
    if (!this._socket || this._socket.destroyed) return;
    const len = payload.length;
    let head;
    if (len < 126) {
      head = Buffer.alloc(2);
      head[1] = 0x80 | len;
    } else if (len < 65536) {
      head = Buffer.alloc(4);
      head[1] = 0x80 | 126;
      head.writeUInt16BE(len, 2);
    } else {
      head = Buffer.alloc(10);
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    head[0] = 0x80 | opcode;
    const mask = crypto.randomBytes(4);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
    this._socket.write(Buffer.concat([head, mask, body]));
  }

  send(text) {
    if (this.readyState === TestWebSocket.CONNECTING) {
      const err = new Error("InvalidStateError: still connecting");
      err.name = "InvalidStateError";
      throw err;
    }
    if (this.readyState !== TestWebSocket.OPEN) return;
    this._send(0x1, Buffer.from(String(text), "utf8"));
  }

  close(code = 1000, reason = "") {
    if (this.readyState === TestWebSocket.CLOSING || this.readyState === TestWebSocket.CLOSED) return;
    if (this.readyState === TestWebSocket.CONNECTING) {
      this._req.destroy();
      return this._fail();
    }
    const r = Buffer.from(String(reason), "utf8");
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this._closeInfo = { code, reason: String(reason), received: false };
    this._send(0x8, p);
    this.readyState = TestWebSocket.CLOSING;
    this._closeTimer = setTimeout(() => this._socket && this._socket.destroy(), 2000);
  }

  /** Drops the TCP connection without a close frame (a network failure). */
  kill() {
    if (this._socket) this._socket.destroy();
    else this.close();
  }
}
