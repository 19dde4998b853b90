//! CORS: lets pages served from the configured origins (`Config::cors_origins`) call the API from a
//! browser. With no origins configured the middleware adds nothing, so browsers allow same-origin pages
//! only (the dev demo at `/` is same-origin).
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
//! answered here with 204 and the allow headers, without reaching the routes; from any other origin it
//! gets 403 `forbidden`. Other requests go through, and the answer carries `Access-Control-Allow-Origin`
//! only when their `Origin` is allowed. WebSocket upgrades are not subject to CORS in browsers.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;

use crate::error::ApiError;

/// Methods the API answers to cross-origin callers.
pub const ALLOWED_METHODS: &str = "GET, POST, DELETE";
/// Request headers a cross-origin page may set (tokens and JSON bodies).
pub const ALLOWED_HEADERS: &str = "authorization, content-type";
/// Response headers a page may read besides the CORS-safelisted ones (back-off on 429/503).
pub const EXPOSED_HEADERS: &str = "retry-after";
/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// Which origins may call.
#[derive(Debug)]
enum Policy {
    /// No CORS headers at all (the default).
    Off,
    /// `*`: any origin; answers say `Access-Control-Allow-Origin: *`.
    Any,
    /// Exactly these origins (compared without regard to ASCII case); answers echo the caller's origin.
    List(Vec<String>),
}

impl Policy {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it may call.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            Policy::Off => None,
            Policy::Any => Some(HeaderValue::from_static("*")),
            Policy::List(list) => {
                let text = origin.to_str().ok()?;
                list.iter().any(|o| o.eq_ignore_ascii_case(text)).then(|| origin.clone())
            }
        }
    }

    /// Whether answers depend on `Origin` (so caches must keep them apart).
    fn varies(&self) -> bool {
        matches!(self, Policy::List(_))
    }
}

/// The middleware factory; wrap the whole `App` with it.
#[derive(Debug, Clone)]
pub struct Cors {
    policy: Rc<Policy>,
}

impl Cors {
    /// `origins` as in `Config::cors_origins` (already validated): empty = off, `*` anywhere = any.
    pub fn new(origins: &[String]) -> Cors {
        let policy = if origins.is_empty() {
            Policy::Off
        } else if origins.iter().any(|o| o == "*") {
            Policy::Any
        } else {
            Policy::List(origins.to_vec())
        };
        Cors { policy: Rc::new(policy) }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CorsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsService { service, policy: self.policy.clone() }))
    }
}

/// The middleware itself, one per worker.
pub struct CorsService<S> {
    service: S,
    policy: Rc<Policy>,
}

impl<S, B> Service<ServiceRequest> for CorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if matches!(*self.policy, Policy::Off) {
            let fut = self.service.call(req);
            return Box::pin(async move { fut.await.map(ServiceResponse::map_into_left_body) });
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        let allowed = origin.as_ref().and_then(|o| self.policy.allow(o));
        let varies = self.policy.varies();
        let preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let res = preflight_response(allowed, origin.as_ref());
            return Box::pin(ready(Ok(req.into_response(res).map_into_right_body())));
        }
        // The request must not be cloned here: routing needs it unshared. Handler and extractor
        // errors are already answers at this point, so they get the headers too.
        let fut = self.service.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let headers = res.headers_mut();
            if let Some(value) = allowed {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
            }
            if varies {
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            Ok(res.map_into_left_body())
        })
    }
}

/// 204 with the allow headers for an allowed origin; 403 `forbidden` (no CORS headers) otherwise.
fn preflight_response(allowed: Option<HeaderValue>, origin: Option<&HeaderValue>) -> HttpResponse {
    let mut res = match allowed {
        Some(value) => {
            let mut res = HttpResponse::NoContent().finish();
            let headers = res.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS));
            res
        }
        None => {
            let shown = origin.and_then(|o| o.to_str().ok()).unwrap_or("(not text)");
            ApiError::Forbidden(format!("origin {shown} may not call this API cross-origin (see --cors-origin)"))
                .error_response()
        }
    };
    res.headers_mut().append(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    res
}
