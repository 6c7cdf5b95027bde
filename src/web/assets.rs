//! `static/`: natkey's own script and stylesheet, embedded in the binary (no CDN, nothing to
//! install next to it).

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::WebError;

const FILES: &[(&str, &str, &str)] = &[
    (
        "natkey.css",
        "text/css; charset=utf-8",
        include_str!("../../static/natkey.css"),
    ),
    (
        "natkey.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/natkey.js"),
    ),
];

pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            let mut response = (*body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        None => WebError::NotFound("no such file".into()).into_response(),
    }
}
