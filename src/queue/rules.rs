//! A pool's pairing rules and room payload, as written in the config file's `[pools.<name>]`
//! tables. Documented in README "Spin pools".

use serde::Deserialize;

/// How an attribute (region, tags) constrains pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AttributeRule {
    /// Not considered.
    #[default]
    Ignore,
    /// Pair a matching partner when one waits, otherwise anyone compatible.
    Prefer,
    /// Only pair users who match (same region; at least one common tag).
    Require,
}

/// One pool's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolRules {
    /// Largest rating difference at join time; none = ratings are ignored.
    pub rating_tolerance: Option<u32>,
    /// How much the tolerance widens per second a user has waited.
    pub rating_widen_per_sec: u32,
    /// Cap on the widened tolerance; none = no cap.
    pub rating_max_tolerance: Option<u32>,
    pub region: AttributeRule,
    pub tags: AttributeRule,
    /// Two users who were paired are not paired again within this window (after a skip, say).
    pub rematch_window_ms: u64,
    /// Users who have waited this long are paired before better-scoring newcomers; none = off.
    pub priority_after_ms: Option<u64>,
    /// Each room gets one of these, at random, as `payload.prompt` (like interview questions).
    pub prompts: Vec<String>,
    /// Static JSON merged into every room's payload.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

impl Default for PoolRules {
    fn default() -> Self {
        PoolRules {
            rating_tolerance: None,
            rating_widen_per_sec: 0,
            rating_max_tolerance: None,
            region: AttributeRule::Ignore,
            tags: AttributeRule::Ignore,
            rematch_window_ms: 60_000,
            priority_after_ms: None,
            prompts: Vec::new(),
            payload: serde_json::Map::new(),
        }
    }
}

impl PoolRules {
    /// True when compatibility can change with time alone (widening tolerance, rematch windows
    /// running out), so the pool must re-check waiting users on a timer as well as on joins.
    pub fn time_dependent(&self) -> bool {
        self.rating_widen_per_sec > 0 || self.rematch_window_ms > 0 || self.priority_after_ms.is_some()
    }

    /// A room's payload: the static part plus a random prompt.
    pub fn room_payload(&self) -> serde_json::Value {
        use rand::seq::SliceRandom;
        let mut payload = self.payload.clone();
        if let Some(prompt) = self.prompts.choose(&mut rand::thread_rng()) {
            payload.insert("prompt".into(), serde_json::Value::String(prompt.clone()));
        }
        serde_json::Value::Object(payload)
    }

    pub fn validate(&self) -> Result<(), String> {
        if let (Some(base), Some(max)) = (self.rating_tolerance, self.rating_max_tolerance) {
            if max < base {
                return Err("rating_max_tolerance must be >= rating_tolerance".into());
            }
        }
        if self.rating_widen_per_sec > 0 && self.rating_tolerance.is_none() {
            return Err("rating_widen_per_sec needs rating_tolerance".into());
        }
        Ok(())
    }
}
