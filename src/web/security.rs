//! The layers every request passes: body size, cross-site request protection, access control,
//! and the security headers of every answer.
//!
//! CSRF: a strict Origin check. A POST must carry an `Origin` equal to the address it was sent
//! to (its `Host`, or `[server] public_origin` behind a proxy that rewrites `Host`); a POST
//! without `Origin` (scripts, `curl`) is accepted only as JSON or with a Bearer token, which a
//! cross-site HTML form cannot send.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::error::{ApiError, WebError};
use super::{AppState, MAX_BODY_BYTES};
use crate::config::AuthMode;

/// The signed-in user: the proxy's user header, `token` for a token session, `None` without
/// auth.
#[derive(Clone, Debug, Default)]
pub struct CurrentUser(pub Option<String>);

const COOKIE: &str = "natkey_token";

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn is_public(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path.starts_with("/static/")
}

fn fail(api: bool, e: WebError) -> Response {
    if api {
        ApiError(e).into_response()
    } else {
        e.into_response()
    }
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let api = path.starts_with("/api/");
    let mut response = match check(&state, &mut req, api) {
        Ok(()) => next.run(req).await,
        Err(WebError::Unauthorized) if !api && req.method() == Method::GET => {
            Redirect::to("/login").into_response()
        }
        Err(e) => fail(api, e),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn check(state: &AppState, req: &mut Request, _api: bool) -> Result<(), WebError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(WebError::TooLarge);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        same_origin(req.headers(), state.inner.auth.public_origin.as_deref())?;
    }
    let user = authenticate(state, req)?;
    req.extensions_mut().insert(CurrentUser(user));
    Ok(())
}

/// Reads `[server] public_origin`: `http(s)://host[:port]`, nothing after it (an `Origin`
/// header never has a path), returned without a trailing slash.
pub fn parse_public_origin(text: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "[server] public_origin = {text:?}: expected the address people open natkey at, \
             like \"https://natkey.example.com\" (scheme and host, no path)"
        )
    };
    let url = url::Url::parse(text.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

/// The strict Origin check (see the module doc).
fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> Result<(), WebError> {
    let cross = || {
        WebError::Forbidden(
            "this request came from another site; natkey only accepts changes made from its own \
             pages"
                .into(),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(cross());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let ok = (!host.is_empty()
                && (origin == format!("http://{host}") || origin == format!("https://{host}")))
                || public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin));
            if ok { Ok(()) } else { Err(cross()) }
        }
        None => {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if json || headers.contains_key(header::AUTHORIZATION) {
                Ok(())
            } else {
                Err(cross())
            }
        }
    }
}

fn authenticate(state: &AppState, req: &Request) -> Result<Option<String>, WebError> {
    let auth = &state.inner.auth;
    let path = req.uri().path();
    match auth.mode {
        AuthMode::None => Ok(None),
        AuthMode::Token => {
            if is_public(path) {
                return Ok(None);
            }
            let Some(token) = auth.token.as_deref() else {
                return Err(WebError::Unauthorized);
            };
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let cookie = cookie_value(req.headers(), COOKIE);
            let ok = [bearer, cookie.as_deref()]
                .into_iter()
                .flatten()
                .any(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
            if ok {
                Ok(Some("token".into()))
            } else {
                Err(WebError::Unauthorized)
            }
        }
        AuthMode::Proxy => {
            if path == "/healthz" || path.starts_with("/static/") {
                return Ok(None);
            }
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if !peer.is_some_and(|ip| auth.trusted_proxies.contains(&ip)) {
                return Err(WebError::Forbidden(
                    "natkey is configured to be reached through the company proxy only".into(),
                ));
            }
            let user = req
                .headers()
                .get(auth.proxy_header.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    WebError::Forbidden(format!(
                        "the proxy did not name a user (header {})",
                        auth.proxy_header
                    ))
                })?;
            Ok(Some(user.to_string()))
        }
    }
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a token can travel in a cookie unchanged.
pub fn token_is_cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    failed: bool,
}

pub async fn login_page() -> Result<Html<String>, WebError> {
    Ok(Html(LoginPage { failed: false }.render()?))
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form?;
    let expected = state.inner.auth.token.as_deref().unwrap_or("");
    if state.inner.auth.mode != AuthMode::Token
        || expected.is_empty()
        || !constant_time_eq(form.token.trim().as_bytes(), expected.as_bytes())
    {
        let html = LoginPage { failed: true }.render()?;
        return Ok((axum::http::StatusCode::UNAUTHORIZED, Html(html)).into_response());
    }
    let cookie = format!("{COOKIE}={expected}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
