// A small EventSource with the browser's interface, for the tests on Node 20 (no global one):
// `new TestEventSource(url)`, `onopen`, `onmessage`, `onerror`, `addEventListener(type, fn)`,
// `close()`, `readyState`. Messages are `{type, data, lastEventId}`. As in a browser, a refused
// stream (not 200 text/event-stream) is `error` with readyState CLOSED, and a stream that ends or
// fails is `error` with readyState CONNECTING, then a reconnect with `Last-Event-ID` after `retry`.

export class TestEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  static opened = [];

  constructor(url) {
    this.url = url;
    this.readyState = TestEventSource.CONNECTING;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.lastEventId = "";
    this.retry = 1000;
    this._listeners = new Map();
    TestEventSource.opened.push(this);
    this._connect();
  }

  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  _dispatch(type, ev) {
    const on = this["on" + type];
    if (typeof on === "function") on.call(this, ev);
    for (const fn of this._listeners.get(type) || []) fn.call(this, ev);
  }

  async _connect() {
    this._ctl = new AbortController();
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let res;
    try {
      res = await fetch(this.url, { headers, signal: this._ctl.signal });
    } catch {
      return this._lost();
    }
    if (this.readyState === TestEventSource.CLOSED) return;
    const type = res.headers.get("content-type") || "";
    if (res.status !== 200 || !type.startsWith("text/event-stream") || !res.body) {
      this.readyState = TestEventSource.CLOSED;
      this._ctl.abort();
      return this._dispatch("error", { type: "error" });
    }
    this.readyState = TestEventSource.OPEN;
    this._dispatch("open", { type: "open" });
    const decoder = new TextDecoder();
    let buf = "";
    let block = { data: [], event: "", id: null };
    try {
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.readyState === TestEventSource.CLOSED) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (block.id !== null) this.lastEventId = block.id;
            if (block.data.length) {
              const name = block.event || "message";
              this._dispatch(name, { type: name, data: block.data.join("\n"), lastEventId: this.lastEventId });
            }
            block = { data: [], event: "", id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let v = i < 0 ? "" : line.slice(i + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "data") block.data.push(v);
          else if (field === "event") block.event = v;
          else if (field === "id") block.id = v;
          else if (field === "retry" && /^\d+$/.test(v)) this.retry = Number(v);
        }
      }
    } catch {
      // the stream failed
    }
    this._lost();
  }

  _lost() {
    if (this.readyState === TestEventSource.CLOSED) return;
    this.readyState = TestEventSource.CONNECTING;
    this._dispatch("error", { type: "error" });
    if (this.readyState === TestEventSource.CLOSED) return;
    this._timer = setTimeout(() => this._connect(), this.retry);
  }

  close() {
    this.readyState = TestEventSource.CLOSED;
    clearTimeout(this._timer);
    if (this._ctl) this._ctl.abort();
  }
}
