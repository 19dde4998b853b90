//! Property tests of every parser at the edge: ids, request bodies, WebSocket frames, the SSE
//! parser and the config file. Each must refuse bad input with an error (never a panic) and keep
//! what it accepts exactly.

use matchd::error::{decode_object, ApiError};
use matchd::protocol::ids::{MatchId, RoomId, UserId, SLOT_COUNT};
use matchd::protocol::queue::{JoinRequest, SkipRequest};
use matchd::protocol::sse::SseParser;
use matchd::protocol::ws::ClientFrame;
use matchd::protocol::SwipeRequest;
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, a few levels deep, with keys and strings drawn from the contract's field names
/// and from noise, so that decoders see both near-misses and garbage.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("target".to_string()),
        Just("direction".to_string()),
        Just("swipe_id".to_string()),
        Just("type".to_string()),
        Just("ref".to_string()),
        Just("pool".to_string()),
        Just("rating".to_string()),
        Just("region".to_string()),
        Just("tags".to_string()),
        Just("room_id".to_string()),
        Just("match_id".to_string()),
        Just("requeue".to_string()),
        ".{0,12}",
    ];
    let text = prop_oneof![
        Just("right".to_string()),
        Just("left".to_string()),
        Just("swipe".to_string()),
        Just("join_queue".to_string()),
        Just("skip".to_string()),
        Just("unmatch".to_string()),
        Just("16383.x".to_string()),
        Just("16384.x".to_string()),
        Just(String::new()),
        "[A-Za-z0-9_.-]{1,70}",
        ".{0,40}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The codes a decoding failure may carry.
fn is_input_error(e: &ApiError) -> bool {
    matches!(e.code(), "bad_request" | "invalid_user")
}

fn contract_user_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn user_ids_are_accepted_exactly_per_the_contract(s in prop_oneof![".{0,80}", "[A-Za-z0-9_.-]{0,70}"]) {
        let parsed = UserId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), contract_user_id(&s), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
            let back: UserId = serde_json::from_value(serde_json::to_value(&id).unwrap()).unwrap();
            prop_assert_eq!(back, id);
        }
    }

    #[test]
    fn slotted_ids_carry_a_slot_only_when_it_is_in_range(
        slot in prop_oneof![0u64..20_000, any::<u64>()],
        suffix in "[a-f0-9]{0,32}",
    ) {
        let text = format!("{slot}.{suffix}");
        let expect = (slot < SLOT_COUNT as u64 && !suffix.is_empty()).then_some(slot as u16);
        if let Ok(id) = MatchId::parse(&text) {
            prop_assert_eq!(id.slot(), expect, "{}", text);
        }
        if let Ok(id) = RoomId::parse(&text) {
            prop_assert_eq!(id.slot(), expect, "{}", text);
        }
        prop_assert_eq!(MatchId::new_in_slot(slot as u16 % SLOT_COUNT).slot(), Some(slot as u16 % SLOT_COUNT));
    }

    #[test]
    fn any_string_is_an_id_or_a_refusal(s in ".{0,200}") {
        for id in [MatchId::parse(&s).ok().and_then(|m| m.slot()), RoomId::parse(&s).ok().and_then(|r| r.slot())] {
            prop_assert!(id.is_none_or(|slot| slot < SLOT_COUNT));
        }
    }

    #[test]
    fn request_bodies_decode_or_refuse_with_an_input_error(value in json_value()) {
        for result in [
            decode_object::<SwipeRequest>(value.clone()).map(|_| ()),
            decode_object::<JoinRequest>(value.clone()).and_then(|j| j.validate().map_err(ApiError::BadRequest)),
            decode_object::<SkipRequest>(value.clone()).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(is_input_error(&e), "{value}: {e:?}");
            }
        }
    }

    #[test]
    fn websocket_frames_decode_or_refuse_with_an_input_error(value in json_value(), text in ".{0,200}") {
        if let Err(e) = decode_object::<ClientFrame>(value.clone()) {
            prop_assert!(is_input_error(&e), "{value}: {e:?}");
        }
        // A frame that is not JSON at all never reaches the decoder; JSON that is not an object is
        // refused by it.
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let Err(e) = decode_object::<ClientFrame>(v) {
                prop_assert!(is_input_error(&e), "{text}: {e:?}");
            }
        }
    }

    #[test]
    fn valid_swipes_are_kept_exactly(target in "[A-Za-z0-9_.-]{1,64}", right in any::<bool>(), key in "[A-Za-z0-9_.-]{1,128}") {
        let direction = if right { "right" } else { "left" };
        let v = serde_json::json!({"target": target, "direction": direction, "swipe_id": key});
        let req: SwipeRequest = decode_object(v).unwrap();
        prop_assert_eq!(req.target.as_str(), target.as_str());
        prop_assert_eq!(req.swipe_id.as_ref().map(|k| k.as_str().to_string()), Some(key));
    }

    #[test]
    fn the_sse_parser_survives_any_bytes(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut parser = SseParser::default();
        for chunk in &chunks {
            for message in parser.feed(chunk) {
                prop_assert!(!message.data.contains("\n\n"));
            }
        }
    }

    #[test]
    fn sse_events_come_out_whole_however_the_bytes_are_split(
        events in prop::collection::vec((1u64..1_000_000, "[a-z_]{1,12}", "[ -~]{0,60}"), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = Vec::new();
        for (id, kind, data) in &events {
            wire.extend_from_slice(format!(": keep-alive\n\nid: {id}\nevent: {kind}\ndata: {data}\n\n").as_bytes());
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        at.push(0);
        at.push(wire.len());
        at.sort_unstable();
        let mut parser = SseParser::default();
        let mut got = Vec::new();
        for pair in at.windows(2) {
            got.extend(parser.feed(&wire[pair[0]..pair[1]]));
        }
        prop_assert_eq!(got.len(), events.len());
        for (m, (id, kind, data)) in got.iter().zip(&events) {
            let id = id.to_string();
            prop_assert_eq!(m.id.as_deref(), Some(id.as_str()));
            prop_assert_eq!(m.event.as_deref(), Some(kind.as_str()));
            prop_assert_eq!(&m.data, data);
        }
    }

    #[test]
    fn any_config_text_loads_or_names_what_is_wrong(text in ".{0,300}") {
        if let Ok(config) = matchd::Config::from_toml(&text) {
            let _ = config.validate();
        }
    }

    #[test]
    fn config_values_of_any_size_are_validated_not_trusted(
        table in prop_oneof![Just("limits"), Just("timeouts")],
        key in prop_oneof![
            Just("max_body_bytes"), Just("max_frame_bytes"), Just("max_connections_per_user"),
            Just("outbox_capacity"), Just("event_log_capacity"), Just("persist_batch_max"),
            Just("heartbeat_interval_ms"), Just("client_timeout_ms"), Just("lease_ms"),
            Just("persist_timeout_ms"), Just("action_timeout_ms"), Just("http_linger_ms"),
            Just("http_request_head_ms"), Just("pool_rescan_ms"), Just("sse_keepalive_ms"),
        ],
        value in prop_oneof![Just(0i64), Just(-1), Just(i64::MAX), any::<i64>(), 0i64..100_000],
    ) {
        let text = format!("[{table}]\n{key} = {value}\n");
        if let Ok(config) = matchd::Config::from_toml(&text) {
            let _ = config.validate();
        }
    }
}
