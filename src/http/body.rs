//! Reading request bodies: gzip decoding and a bound on the decoded size, so
//! that neither a large body nor a gzip bomb can exhaust memory.

use actix_web::dev::Decompress;
use actix_web::web::{self, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;

use super::ApiError;

/// Read the whole (decoded) body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(length) = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
    {
        if length > limit {
            return Err(ApiError::PayloadTooLarge);
        }
    }
    let mut stream = Decompress::from_headers(payload.into_inner(), request.headers());
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::BadRequest(format!("reading request body: {error}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
