//! Headless Chromium through chromedriver's W3C WebDriver HTTP API, with plain JSON requests (awc).
//! `ChromeDriver` runs `chromedriver --port=<free port>` as a child process; each `Browser` is one
//! WebDriver session (its own Chromium with a fresh profile directory). Both clean up on drop: the
//! session is deleted (Chromium quits), leftover Chromium processes of that profile are killed by pid,
//! and chromedriver is killed. Every wait is bounded. Missing binaries panic with the install hint:
//! the browser test never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::redis::free_port;

/// The W3C key under which an element reference comes back.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Bound on one WebDriver command (session creation starts a browser, so it is generous).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait re-checks the page.
const POLL: Duration = Duration::from_millis(100);

const INSTALL_HINT: &str = "install them (`apt-get install -y chromium chromium-driver`; ./scripts/test.sh does) or \
                            set MATCHD_CHROMIUM_BIN / MATCHD_CHROMEDRIVER_BIN";

/// `MATCHD_CHROMIUM_BIN`, else /usr/bin/chromium.
fn chromium_bin() -> String {
    std::env::var("MATCHD_CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// `MATCHD_CHROMEDRIVER_BIN`, else /usr/bin/chromedriver.
fn chromedriver_bin() -> String {
    std::env::var("MATCHD_CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// A running chromedriver, killed on drop.
pub struct ChromeDriver {
    base: String,
    port: u16,
    client: awc::Client,
    child: Child,
}

impl ChromeDriver {
    /// Starts chromedriver on a free port and waits (at most 20 s) until it is ready.
    pub async fn start() -> ChromeDriver {
        let (chromium, driver) = (chromium_bin(), chromedriver_bin());
        for bin in [&chromium, &driver] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: the demo browser test needs Chromium and chromedriver; {INSTALL_HINT}"
            );
        }
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver} ({e}); {INSTALL_HINT}"));
        let client = awc::Client::builder().timeout(COMMAND_TIMEOUT).finish();
        let driver = ChromeDriver { base: format!("http://127.0.0.1:{port}"), port, client, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(mut res)) = tokio::time::timeout(
                Duration::from_secs(2),
                driver.client.get(format!("{}/status", driver.base)).send(),
            )
            .await
            {
                if let Ok(body) = res.json::<Value>().await {
                    if body["value"]["ready"] == json!(true) {
                        return driver;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver on port {port} did not become ready within 20 s");
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new session: a headless Chromium with a fresh profile.
    pub async fn browser(&self, label: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium_bin(), "args": args},
        }}});
        let value = command(&self.client, "POST", &format!("{}/session", self.base), Some(caps)).await;
        let id = value["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {value}")).to_string();
        Browser {
            label: label.to_string(),
            url: format!("{}/session/{id}", self.base),
            path: format!("/session/{id}"),
            port: self.port,
            client: self.client.clone(),
            profile,
            open: true,
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one WebDriver command and returns its `value`; a WebDriver error panics with its message.
async fn command(client: &awc::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let req = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    };
    let sent = async {
        let mut res = match body {
            Some(body) => req.send_json(&body).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {url} failed: {e}"));
        let json: Value = res.json().limit(16 << 20).await.unwrap();
        (res.status(), json)
    };
    let (status, json) = tokio::time::timeout(COMMAND_TIMEOUT, sent)
        .await
        .unwrap_or_else(|_| panic!("WebDriver {method} {url}: no answer within {COMMAND_TIMEOUT:?}"));
    if !status.is_success() {
        panic!("WebDriver {method} {url}: {status} {} {}", json["value"]["error"], json["value"]["message"]);
    }
    json["value"].clone()
}

/// One WebDriver session. Ends the session on drop if `quit` was not called.
pub struct Browser {
    label: String,
    /// `http://127.0.0.1:<port>/session/<id>`.
    url: String,
    /// `/session/<id>`, for the blocking delete in `drop`.
    path: String,
    port: u16,
    client: awc::Client,
    /// Chromium's `--user-data-dir`; also how leftover processes are found.
    profile: tempfile::TempDir,
    open: bool,
}

impl Browser {
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(&self.client, method, &format!("{}{path}", self.url), body).await
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The element with `data-testid="<testid>"`.
    async fn element(&self, testid: &str) -> String {
        let found = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": format!("[data-testid=\"{testid}\"]")})),
            )
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no element {testid}: {found}", self.label))
            .to_string()
    }

    /// Clicks the element with that test id, once it is enabled (at most `within`).
    pub async fn click(&self, testid: &str, within: Duration) {
        self.wait(
            &format!("{testid} to be enabled"),
            &format!("const e = document.querySelector('[data-testid=\"{testid}\"]'); return !!e && !e.disabled;"),
            within,
        )
        .await;
        let id = self.element(testid).await;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// Replaces the text of an input, typing it as a user would.
    pub async fn type_into(&self, testid: &str, text: &str) {
        let id = self.element(testid).await;
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Polls `script` until it returns something other than `false`, `null` or `""`, at most `within`;
    /// on time-out, panics showing the page's text.
    pub async fn wait(&self, what: &str, script: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.js("return document.body.innerText;").await;
                let text = page.as_str().unwrap_or_default();
                panic!("{}: no {what} within {within:?}; the page shows:\n{text:.4000}", self.label);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A PNG of the current viewport (WebDriver's base64 screenshot, decoded).
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.cmd("GET", "/screenshot", None).await;
        let text = value.as_str().unwrap_or_else(|| panic!("{}: screenshot is not a string: {value:.200}", self.label));
        base64_decode(text).unwrap_or_else(|| panic!("{}: the screenshot is not base64", self.label))
    }

    /// Ends the session (Chromium quits).
    pub async fn quit(mut self) {
        self.cmd("DELETE", "", None).await;
        self.open = false;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.open {
            // A test that panicked: end the session without the (async) client.
            let _ = blocking_delete(self.port, &self.path);
        }
        kill_processes_using(&self.profile.path().display().to_string());
    }
}

/// `DELETE <path>` to chromedriver, with short timeouts; returns once the answer's head arrived.
fn blocking_delete(port: u16, path: &str) -> std::io::Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    // The answer comes once the session is gone; chromedriver may keep the connection open after it.
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf)? {
            0 => break,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(())
}

/// Kills (by pid) the processes whose command line names `marker` (this session's own profile dir),
/// in case Chromium outlived its session.
fn kill_processes_using(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        }
    }
}

/// Standard base64 (with padding, no line breaks), as WebDriver returns screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            n = (n << 6) | value(b)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[test]
fn base64_decodes_like_the_rfc() {
    assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
    assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
    assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
    assert!(base64_decode("Zm9").is_none());
}
