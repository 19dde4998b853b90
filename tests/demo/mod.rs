//! The developer demo page at `/` (dev mode only) and CORS: the headers for configured origins
//! only, and the page itself driven in two headless Chromium sessions (alice and bob) through the
//! whole flow: connect, swipe, match, spin, room, skip, resume after a dropped socket, unmatch.

mod webdriver;

use std::time::Duration;

use awc::http::{header, Method, StatusCode};
use tokio::time::Instant;

use crate::common::{self, Api, TestServer};
use webdriver::{Browser, ChromeDriver};

/// Bound on each thing the page should show after a click (a server round trip plus rendering).
const UI_TIMEOUT: Duration = Duration::from_secs(15);

const ALLOWED: &str = "http://localhost:3000";

async fn preflight(api: &Api, path: &str, origin: &str) -> common::clients::Reply {
    let req = api
        .request(Method::OPTIONS, path)
        .insert_header((header::ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "POST"))
        .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type"));
    api.send(req, None).await
}

async fn get_with_origin(api: &Api, path: &str, token: &str, origin: &str) -> common::clients::Reply {
    let req = api.request(Method::GET, path).bearer_auth(token).insert_header((header::ORIGIN, origin));
    api.send(req, None).await
}

fn lower(value: Option<String>) -> String {
    value.unwrap_or_default().to_ascii_lowercase()
}

#[actix_rt::test]
async fn cors_allows_configured_origins_only() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.cors_origins = vec![ALLOWED.into(), "https://app.example".into()];
    let server = TestServer::start(config).await;
    let api = server.api();

    let ok = preflight(&api, "/v1/swipes", ALLOWED).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin").as_deref(), Some(ALLOWED));
    let methods = lower(ok.header("access-control-allow-methods"));
    for m in ["get", "post", "delete"] {
        assert!(methods.contains(m), "methods {methods:?} lack {m}");
    }
    let headers = lower(ok.header("access-control-allow-headers"));
    for h in ["authorization", "content-type"] {
        assert!(headers.contains(h), "allowed headers {headers:?} lack {h}");
    }
    assert!(ok.header("access-control-max-age").is_some());
    assert!(lower(ok.header("vary")).contains("origin"));

    // The answer to the real request names the origin too, and lets the page read Retry-After.
    let token = api.token("alice").await;
    let res = get_with_origin(&api, "/v1/matches", &token, ALLOWED).await;
    assert_eq!(res.ok(), serde_json::json!({"matches": []}));
    assert_eq!(res.header("access-control-allow-origin").as_deref(), Some(ALLOWED));
    assert!(lower(res.header("access-control-expose-headers")).contains("retry-after"));
    // Errors carry it as well, so the page can read the contract's error body.
    let err = get_with_origin(&api, "/v1/nope", &token, ALLOWED).await;
    err.assert_error(404, "not_found");
    assert_eq!(err.header("access-control-allow-origin").as_deref(), Some(ALLOWED));

    let evil = "http://evil.example";
    let refused = preflight(&api, "/v1/swipes", evil).await;
    refused.assert_error(403, "forbidden");
    for name in ["access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers"] {
        assert_eq!(refused.header(name), None, "{name} sent to a disallowed origin");
    }
    let res = get_with_origin(&api, "/v1/matches", &token, evil).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("access-control-allow-origin"), None);
    server.shutdown().await;
}

#[actix_rt::test]
async fn cors_wildcard_allows_any_origin() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.cors_origins = vec!["*".into()];
    let server = TestServer::start(config).await;
    let api = server.api();
    let ok = preflight(&api, "/v1/queue", "http://anything.example:8000").await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin").as_deref(), Some("*"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn no_cors_headers_without_configured_origins() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let res = preflight(&api, "/v1/swipes", ALLOWED).await;
    assert!(!res.status.is_success(), "a preflight must not succeed without CORS: {res:?}");
    let token = api.token("alice").await;
    let get = get_with_origin(&api, "/v1/matches", &token, ALLOWED).await;
    assert_eq!(get.status, StatusCode::OK);
    for reply in [&res, &get] {
        let cors: Vec<_> =
            reply.headers.keys().filter(|k| k.as_str().starts_with("access-control-")).map(|k| k.to_string()).collect();
        assert!(cors.is_empty(), "CORS headers {cors:?} without configured origins: {reply:?}");
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn demo_page_is_served_in_dev_mode_only() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let page = api.send(api.request(Method::GET, "/"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").unwrap().starts_with("text/html"), "{:?}", page.header("content-type"));
    let html = std::str::from_utf8(&page.body).unwrap();
    for testid in ["user-id", "connect", "status", "swipe-right", "swipe-left", "matches", "spin", "skip", "log"] {
        assert!(html.contains(&format!("data-testid=\"{testid}\"")), "the page lacks {testid}");
    }
    assert!(!html.contains("https://") && !html.contains("src=\"http"), "the page must not load external assets");
    server.shutdown().await;

    let mut config = common::config();
    config.jwt_secret = Some("a-real-secret-of-enough-bytes".into());
    let server = TestServer::start(config).await;
    let api = server.api();
    api.send(api.request(Method::GET, "/"), None).await.assert_error(404, "not_found");
    server.shutdown().await;
}

/// The `data-testid` selector for `js` snippets.
fn q(testid: &str) -> String {
    format!("document.querySelector('[data-testid=\"{testid}\"]')")
}

/// Opens the page as `me`, connects, and sets the deck to `other`.
async fn sign_in(browser: &Browser, page_url: &str, me: &str, other: &str) {
    browser.goto(page_url).await;
    browser.type_into("user-id", me).await;
    browser.click("connect", UI_TIMEOUT).await;
    browser
        .wait("connected status", &format!("return {}.dataset.state === 'connected';", q("status")), UI_TIMEOUT)
        .await;
    browser.type_into("deck-input", other).await;
    browser.click("deck-apply", UI_TIMEOUT).await;
    browser
        .wait(&format!("card {other}"), &format!("return {}.textContent === '{other}';", q("card")), UI_TIMEOUT)
        .await;
}

#[actix_rt::test]
async fn two_browsers_match_spin_and_skip_on_the_demo_page() {
    let _trace = common::trace_init();
    let started = Instant::now();
    let mut config = common::config();
    config.limits.joins_per_minute = 100;
    let server = TestServer::start(config).await;
    // TestServer exposes no base URL; a request built by its client carries it.
    let page_url = server.api().request(Method::GET, "/").get_uri().to_string();

    let driver = ChromeDriver::start().await;
    let alice = driver.browser("alice").await;
    let bob = driver.browser("bob").await;
    let browsers = [(&alice, "alice", "bob"), (&bob, "bob", "alice")];
    for (browser, me, other) in browsers {
        sign_in(browser, &page_url, me, other).await;
    }
    let opened = started.elapsed();

    // Swipe right on each other with the page's button: pending, then matched; both pages list it.
    alice.click("swipe-right", UI_TIMEOUT).await;
    let result = format!("return {}.dataset.status;", q("swipe-result"));
    alice
        .wait("pending swipe", &format!("return {}.dataset.status === 'pending';", q("swipe-result")), UI_TIMEOUT)
        .await;
    bob.click("swipe-right", UI_TIMEOUT).await;
    bob.wait("matched swipe", &format!("return {}.dataset.status === 'matched';", q("swipe-result")), UI_TIMEOUT).await;
    let mut match_ids = Vec::new();
    for (browser, _, other) in browsers {
        let id = browser
            .wait(
                &format!("a match with {other}"),
                &format!("const m = document.querySelector('[data-testid=match][data-partner=\"{other}\"]'); return m && m.dataset.matchId;"),
                UI_TIMEOUT,
            )
            .await;
        match_ids.push(id);
    }
    assert_eq!(match_ids[0], match_ids[1], "both pages show the same match");
    assert_eq!(alice.js(&result).await, "pending", "alice's own swipe result stays as answered");

    // Both spin: both pages show the same room with the other as partner.
    alice.click("spin", UI_TIMEOUT).await;
    bob.click("spin", UI_TIMEOUT).await;
    let mut room_ids = Vec::new();
    for (browser, _, other) in browsers {
        let script = format!(
            "return !{room}.hidden && {partner}.textContent === '{other}' && {id}.textContent;",
            room = q("room"),
            partner = q("room-partner"),
            id = q("room-id")
        );
        room_ids.push(browser.wait(&format!("a room with {other}"), &script, UI_TIMEOUT).await);
    }
    assert_eq!(room_ids[0], room_ids[1], "both pages show the same room");

    // Bob skips: alice's page shows room_closed (partner_skipped), and neither shows the room any more.
    bob.click("skip", UI_TIMEOUT).await;
    alice
        .wait(
            "room_closed partner_skipped",
            "return !!document.querySelector('[data-testid=room-event][data-kind=closed][data-reason=partner_skipped]');",
            UI_TIMEOUT,
        )
        .await;
    for (browser, _, _) in browsers {
        browser.wait("the room to be gone", &format!("return {}.hidden;", q("room")), UI_TIMEOUT).await;
    }
    // Every frame is in the log.
    for kind in ["hello", "match", "room_assigned", "room_closed"] {
        let script = format!("return document.querySelectorAll('[data-testid=log] li[data-type={kind}]').length;");
        alice.wait(&format!("{kind} in the log"), &script, UI_TIMEOUT).await;
    }

    // A dropped socket comes back by itself and resumes after the last event it saw.
    let last_id = alice.js(&format!("return {}.dataset.lastId;", q("status"))).await;
    let last_id = last_id.as_str().unwrap().to_string();
    alice.click("drop", UI_TIMEOUT).await;
    alice
        .wait(
            &format!("a connection resumed after #{last_id}"),
            &format!(
                "const s = {}; return s.dataset.state === 'connected' && s.dataset.resumedFrom === '{last_id}';",
                q("status")
            ),
            UI_TIMEOUT,
        )
        .await;
    let ws_opens = alice.js("return [...document.querySelectorAll('[data-testid=log] li[data-type=\"ws open\"]')].map(e => e.textContent);").await;
    assert!(
        ws_opens.to_string().contains(&format!("since={last_id}")),
        "the page reconnected with ?since=: {ws_opens}"
    );

    // Alice unmatches: bob's page drops the match (the `unmatched` event).
    alice.click("unmatch-bob", UI_TIMEOUT).await;
    bob.wait(
        "the match to be gone",
        "return !document.querySelector('[data-testid=match]') && document.querySelectorAll('[data-testid=log] li[data-type=unmatched]').length > 0;",
        UI_TIMEOUT,
    )
    .await;

    alice.quit().await;
    bob.quit().await;
    drop(driver);
    eprintln!("demo browser test: browsers ready in {opened:?}, whole test {:?}", started.elapsed());
    server.shutdown().await;
}

/// Checks that `png` is a well-formed PNG (signature, every chunk's CRC, IHDR first, IEND last) of
/// the given size, and not trivial (large enough to hold more than a blank page). Returns its
/// width and height.
fn assert_valid_png(png: &[u8]) -> (u32, u32) {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    let (mut at, mut kinds, mut size) = (8, Vec::new(), (0, 0));
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
        assert_eq!(crc, crc32(&png[at + 4..at + 8 + len]), "bad CRC in chunk {}", String::from_utf8_lossy(kind));
        if kind == b"IHDR" {
            size = (
                u32::from_be_bytes(data[0..4].try_into().unwrap()),
                u32::from_be_bytes(data[4..8].try_into().unwrap()),
            );
        }
        kinds.push(String::from_utf8_lossy(kind).to_string());
        at += 12 + len;
    }
    assert_eq!(at, png.len(), "trailing bytes after the last chunk");
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "IDAT"), "{kinds:?}");
    assert!(size.0 >= 800 && size.1 >= 600, "screenshot is only {size:?}");
    assert!(png.len() > 20_000, "a {} byte screenshot is nearly blank", png.len());
    size
}

/// The operations dashboard in headless Chromium: it loads, polls its JSON, and draws its charts
/// with the traffic a few users make (matches, rooms, skips, open streams); a screenshot is taken.
#[actix_rt::test]
async fn the_dashboard_draws_live_charts_from_the_servers_metrics() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.joins_per_minute = 1000;
    config.limits.skips_per_minute = 1000;
    config.pools = toml::from_str("[interview]\nrating_tolerance = 100\n").unwrap();
    let server = TestServer::start(config).await;
    let api = server.api();
    let base = format!("http://{}", server.addr());

    // Traffic over a few seconds, so the once-a-second samples see rates.
    let names: Vec<String> = (0..8).map(|i| format!("dash{i}")).collect();
    let tokens: Vec<String> = futures_util::future::join_all(names.iter().map(|u| api.token(u))).await;
    let conns: Vec<common::Conn> = futures_util::future::join_all(tokens.iter().map(|t| api.ws(t))).await;
    let traffic = async {
        for round in 0..4 {
            for k in 0..5 {
                api.mutual_match(&format!("dm{round}-{k}a"), &format!("dm{round}-{k}b")).await;
            }
            let (a, b) = (&tokens[2 * (round % 4)], &tokens[2 * (round % 4) + 1]);
            api.post_json("/v1/queue", Some(a), &serde_json::json!({"pool": "interview"})).await;
            let room = api.post_json("/v1/queue", Some(b), &serde_json::json!({"pool": "interview"})).await.ok();
            let room_id = room["room"]["room_id"].as_str().expect("the second join is paired").to_string();
            api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(a), &serde_json::json!({"requeue": false}))
                .await
                .ok();
            api.delete("/v1/queue", b).await;
            actix_rt::time::sleep(Duration::from_millis(700)).await;
        }
    };
    traffic.await;

    // The JSON first: this node owns every slot, both pools are there, the figures moved.
    let data = api.send(api.request(Method::GET, "/dashboard/data"), None).await.ok();
    assert_eq!(data["nodes"][0]["owned_slots"], 16384, "{data}");
    assert_eq!(data["nodes"][0]["self"], true);
    assert_eq!(data["connected_users"], 8, "{data}");
    assert!(data["totals"]["matches"].as_u64().unwrap() >= 20, "{data}");
    let pools: Vec<&str> = data["pools"].as_array().unwrap().iter().filter_map(|p| p["pool"].as_str()).collect();
    assert!(pools.contains(&"default") && pools.contains(&"interview"), "{pools:?}");
    let series = &data["series"]["matches_per_sec"];
    assert!(series.as_array().unwrap().iter().any(|v| v.as_f64().unwrap_or(0.0) > 0.0), "no match rate in {series}");

    let driver = ChromeDriver::start().await;
    let browser = driver.browser("dashboard").await;
    browser.goto(&format!("{base}/dashboard")).await;
    browser.wait("three polls", "return +(document.body.dataset.polls || 0) >= 3;", UI_TIMEOUT).await;
    // Every chart has drawn its lines, and the rate chart shows matches.
    for chart in ["c-rates", "c-connections", "c-latency"] {
        let drawn = browser.js(&format!("return +document.getElementById('{chart}').dataset.drawn;")).await;
        assert!(drawn.as_f64().unwrap_or(0.0) >= 1.0, "{chart} drew no line: {drawn}");
    }
    let points = browser
        .js("return +document.querySelector('#c-rates polyline[data-series=matches_per_sec]').dataset.points;")
        .await;
    assert!(points.as_f64().unwrap() >= 5.0, "the matches line has {points} points");
    let peak = browser.js("return +document.getElementById('c-rates').dataset.max;").await;
    assert!(peak.as_f64().unwrap() > 0.0, "the rate chart is flat: {peak}");
    let users = browser.js("return document.getElementById('t-users').textContent;").await;
    assert_eq!(users, "8");
    let slots = browser.js("return document.querySelector('#nodes tbody td.num').textContent;").await;
    assert_eq!(slots, "16384");
    let interview = browser
        .wait(
            "the interview pool row",
            "const r = document.querySelector('#pools tr[data-pool=interview]'); return r && r.innerText;",
            UI_TIMEOUT,
        )
        .await;
    assert!(interview.as_str().unwrap().contains("interview"), "{interview}");
    assert_eq!(browser.js("return document.getElementById('error').textContent;").await, "");

    let png = browser.screenshot().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.png");
    std::fs::write(&file, &png).unwrap();
    let (w, h) = assert_valid_png(&std::fs::read(&file).unwrap());
    eprintln!("dashboard screenshot: {} ({w}x{h}, {} bytes)", file.display(), png.len());
    if let Ok(keep) = std::env::var("MATCHD_SCREENSHOT_DIR") {
        std::fs::copy(&file, std::path::Path::new(&keep).join("dashboard.png")).unwrap();
    }
    browser.quit().await;
    drop(conns);
    server.shutdown().await;
}

/// Outside dev mode (a real secret, no dashboard key) the dashboard is not served at all.
#[actix_rt::test]
async fn the_dashboard_is_not_served_outside_dev_mode_without_a_key() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.jwt_secret = Some("a-real-secret-of-enough-length".into());
    let server = TestServer::start(config).await;
    let api = server.api();
    for path in ["/dashboard", "/dashboard/data", "/dashboard/data?key=dev-api-key"] {
        api.send(api.request(Method::GET, path), None).await.assert_error(404, "not_found");
    }
    server.shutdown().await;
}

/// Outside dev mode with a server API key, the dashboard is served to requests that carry it.
#[actix_rt::test]
async fn the_dashboard_opens_with_the_server_api_key() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.jwt_secret = Some("a-real-secret-of-enough-length".into());
    config.api_key = Some("backend-key-0123456789".into());
    let server = TestServer::start(config).await;
    let api = server.api();
    for path in ["/dashboard", "/dashboard/data"] {
        api.send(api.request(Method::GET, path), None).await.assert_error(401, "unauthorized");
        let wrong = api.request(Method::GET, path).insert_header(("X-Api-Key", "dev-api-key"));
        api.send(wrong, None).await.assert_error(401, "unauthorized");
        let right = api.request(Method::GET, path).insert_header(("X-Api-Key", "backend-key-0123456789"));
        let reply = api.send(right, None).await;
        assert_eq!(reply.status.as_u16(), 200, "{path}: {reply:?}");
    }
    let by_query = api.send(api.request(Method::GET, "/dashboard/data?key=backend-key-0123456789"), None).await;
    assert_eq!(by_query.status.as_u16(), 200, "{by_query:?}");
    server.shutdown().await;
}
