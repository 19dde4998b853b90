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
