//! The web layer's one error type. Pages answer with an HTML error page, `/api` routes with its
//! JSON twin [`ApiError`]; a 500 is logged here and never shown in detail to the client.

use askama::Template;
use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// 404 Not Found
    #[error("{0}")]
    NotFound(String),
    /// 400 Bad Request
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized
    #[error("sign in first: this natkey requires a token")]
    Unauthorized,
    /// 403 Forbidden: a cross-site POST, or a user the proxy did not vouch for.
    #[error("{0}")]
    Forbidden(String),
    /// 409 Conflict: a name that is taken, or a schedule natkey.toml defines.
    #[error("{0}")]
    Conflict(String),
    /// 413 Payload Too Large
    #[error(
        "the request is larger than natkey accepts ({} MB); paste one load task, not a data file",
        super::MAX_BODY_BYTES / (1024 * 1024)
    )]
    TooLarge,
    /// 500 Internal Server Error
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500 Internal Server Error
    #[error(transparent)]
    Render(#[from] askama::Error),
    /// 500 Internal Server Error
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Store(_) | WebError::Render(_) | WebError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What the client may read: the message, except for a 500.
    fn public_message(&self) -> String {
        if self.status().is_server_error() {
            tracing::error!("{self}");
            "natkey hit an internal error; the server log has the details".to_string()
        } else {
            self.to_string()
        }
    }
}

fn from_rejection(status: StatusCode, text: String) -> WebError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        WebError::TooLarge
    } else {
        WebError::BadRequest(text)
    }
}

impl From<FormRejection> for WebError {
    fn from(r: FormRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<JsonRejection> for WebError {
    fn from(r: JsonRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for WebError {
    fn from(r: QueryRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_string(),
            message: self.public_message(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}

/// The JSON twin of [`WebError`] for `/api` routes: `{"error": "..."}` with the same status.
#[derive(Debug)]
pub struct ApiError(pub WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = serde_json::json!({ "error": self.0.public_message() });
        (status, Json(body)).into_response()
    }
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError(WebError::NotFound("no such API route".into())).into_response()
    } else {
        WebError::NotFound("there is no page here".into()).into_response()
    }
}

/// Extractor rejections (a `Path`, `Query` or `Json` that does not parse: `/api/runs/abc`)
/// answer in axum's plain text; on `/api` routes they are turned into the JSON twin, so every
/// API error is `{"error": "..."}` as the README says.
pub async fn api_rejections_as_json(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let plain_text = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !is_api || !plain_text || !response.status().is_client_error() {
        return response;
    }
    let status = response.status();
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_string(),
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError(WebError::TooLarge).into_response();
    }
    // The rejection's own status stays (400, or 422 for a JSON body of the wrong shape).
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}
