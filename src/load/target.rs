//! The server under test: its HTTP and WebSocket base URLs. Only loopback addresses are accepted,
//! so the tool cannot be pointed at someone else's machine by mistake.

use std::net::IpAddr;

use super::error::LoadError;

/// Base URLs without a trailing slash.
#[derive(Debug, Clone)]
pub struct Target {
    pub http: String,
    pub ws: String,
}

impl Target {
    /// Parses `http://host:port[/prefix]`; refuses other schemes and non-loopback hosts.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let uri: awc::http::Uri =
            url.parse().map_err(|e| LoadError::Usage(format!("--url {url:?} is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(LoadError::Usage(format!("--url {url:?} must start with http://")));
        }
        let authority = uri.authority().ok_or_else(|| LoadError::Usage(format!("--url {url:?} has no host")))?;
        if !is_loopback(authority.host()) {
            return Err(LoadError::Usage(format!(
                "--url host {} is not a loopback address; matchd-load only targets 127.0.0.0/8, ::1 or localhost",
                authority.host()
            )));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Target { http: format!("http://{authority}{path}"), ws: format!("ws://{authority}{path}") })
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        let t = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.http, "http://127.0.0.1:8080");
        assert_eq!(t.ws, "ws://127.0.0.1:8080");
        assert!(Target::parse("http://localhost:1").is_ok());
        assert!(Target::parse("http://[::1]:9000").is_ok());
        assert!(Target::parse("http://127.3.4.5:80").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080").is_err());
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("https://127.0.0.1:8080").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
