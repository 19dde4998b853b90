//! JSON body extractors. Bodies must be JSON objects: serde's derived structs would otherwise
//! also accept the positional array form (`["bob","right"]`), which skips the unknown-field check.

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A required JSON object body.
pub struct JsonBody<T>(pub T);

/// A JSON object body that may be left out entirely (then `T::default()`).
pub struct OptionalJsonBody<T>(pub T);

fn extract<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<T, actix_web::Error>> {
    // Validated as JSON (limits, content type, syntax: the JsonConfig error handler) without
    // building a tree, then decoded straight into `T` once it is known to be an object.
    let json = web::Json::<Box<serde_json::value::RawValue>>::from_request(req, payload);
    Box::pin(async move {
        let raw = json.await?.into_inner();
        if !raw.get().starts_with('{') {
            return Err(ApiError::BadRequest("the body must be a JSON object".into()).into());
        }
        Ok(serde_json::from_str::<T>(raw.get()).map_err(ApiError::from_decode)?)
    })
}

/// True when the request declares no body at all.
fn has_no_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    match headers.get(header::CONTENT_LENGTH) {
        Some(len) => len.to_str().map(|s| s.trim() == "0").unwrap_or(false),
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = extract::<T>(req, payload);
        Box::pin(async move { fut.await.map(JsonBody) })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if has_no_body(req) {
            return Box::pin(async { Ok(OptionalJsonBody(T::default())) });
        }
        let fut = extract::<T>(req, payload);
        Box::pin(async move { fut.await.map(OptionalJsonBody) })
    }
}
