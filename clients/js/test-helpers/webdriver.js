// Headless Chromium through chromedriver's W3C WebDriver HTTP API, with plain fetch calls.
// `ChromeDriver.start()` runs chromedriver on a free port; `driver.session()` starts a Chromium
// with a fresh profile. `stop()` ends every session, kills chromedriver, and kills by pid any
// Chromium process left with one of those profiles. Missing binaries fail with an install hint.

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { freePort, sleep, waitFor } from "./server.js";

const INSTALL_HINT =
  "install them (apt-get install -y chromium chromium-driver; ./scripts/test.sh does) or set MATCHD_CHROMIUM_BIN / MATCHD_CHROMEDRIVER_BIN";

export const CHROMIUM = process.env.MATCHD_CHROMIUM_BIN || "/usr/bin/chromium";
export const CHROMEDRIVER = process.env.MATCHD_CHROMEDRIVER_BIN || "/usr/bin/chromedriver";

/** One WebDriver command's `value`; a WebDriver error throws with its message. */
async function command(method, url, body, timeout = 60000) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeout),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`WebDriver ${method} ${url}: ${res.status} ${json.value?.error}: ${json.value?.message}`);
  return json.value;
}

export class ChromeDriver {
  static async start() {
    for (const bin of [CHROMIUM, CHROMEDRIVER]) {
      if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: the browser tests need Chromium and chromedriver; ${INSTALL_HINT}`);
    }
    const d = new ChromeDriver();
    d.port = await freePort();
    d.child = spawn(CHROMEDRIVER, [`--port=${d.port}`], { stdio: "ignore" });
    d.child.on("error", () => {});
    d.base = `http://127.0.0.1:${d.port}`;
    d.sessions = [];
    process.on("exit", () => d.kill());
    await waitFor("chromedriver to be ready", async () => {
      if (d.child.exitCode !== null) throw new Error(`chromedriver exited (${d.child.exitCode}); ${INSTALL_HINT}`);
      try {
        const v = await command("GET", `${d.base}/status`, undefined, 2000);
        return v.ready === true;
      } catch {
        return false;
      }
    }, { timeout: 20000, interval: 100 });
    return d;
  }

  /** A new session: a headless Chromium with a fresh profile directory. */
  async session(label) {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), "matchd-js-chromium-"));
    const args = [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--window-size=1200,900",
      `--user-data-dir=${profile}`,
    ];
    const caps = { capabilities: { alwaysMatch: { browserName: "chrome", "goog:chromeOptions": { binary: CHROMIUM, args } } } };
    const value = await command("POST", `${this.base}/session`, caps, 90000);
    const s = new Session(label, `${this.base}/session/${value.sessionId}`, profile);
    this.sessions.push(s);
    return s;
  }

  kill() {
    for (const s of this.sessions) killProcessesUsing(s.profile);
    try {
      this.child.kill("SIGKILL");
    } catch {
      // gone
    }
  }

  async stop() {
    for (const s of this.sessions) await s.quit();
    this.kill();
    for (const s of this.sessions) fs.rmSync(s.profile, { recursive: true, force: true });
  }
}

export class Session {
  constructor(label, url, profile) {
    this.label = label;
    this.url = url;
    this.profile = profile;
    this.open = true;
  }

  cmd(method, p, body) {
    return command(method, `${this.url}${p}`, body);
  }

  goto(url) {
    return this.cmd("POST", "/url", { url });
  }

  /** Runs `script` (a function body; `args` as `arguments`) in the page; awaits a returned promise. */
  js(script, ...args) {
    return this.cmd("POST", "/execute/sync", { script, args });
  }

  /** Polls `script` until it returns something truthy, at most `timeout` ms; shows the page on failure. */
  async wait(what, script, { timeout = 15000, args = [] } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const v = await this.js(script, ...args);
      if (v) return v;
      if (Date.now() > deadline) {
        const text = await this.js("return document.body ? document.body.innerText : '';").catch(() => "");
        throw new Error(`${this.label}: no ${what} within ${timeout} ms; the page shows:\n${String(text).slice(0, 3000)}`);
      }
      await sleep(100);
    }
  }

  /** Opens a new tab and returns its handle. */
  async newTab() {
    const v = await this.cmd("POST", "/window/new", { type: "tab" });
    return v.handle;
  }

  handle() {
    return this.cmd("GET", "/window");
  }

  switchTo(handle) {
    return this.cmd("POST", "/window", { handle });
  }

  async quit() {
    if (!this.open) return;
    this.open = false;
    await command("DELETE", this.url, undefined, 15000).catch(() => {});
  }
}

/** Kills (by pid) every process whose command line names `marker` (a session's own profile dir). */
function killProcessesUsing(marker) {
  let entries = [];
  try {
    entries = fs.readdirSync("/proc");
  } catch {
    return;
  }
  for (const pid of entries) {
    if (!/^\d+$/.test(pid)) continue;
    let cmdline = "";
    try {
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (cmdline.includes(marker)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // gone
      }
    }
  }
}
