//! Warehouse URLs: which engine, where, and how to show them without the password.

use std::fmt;
use std::path::PathBuf;

use super::{Engine, WarehouseError};

/// A parsed warehouse URL. The original text (which may hold a password) is kept private and
/// only handed to the driver; everything a person sees goes through [`WarehouseUrl::redacted`].
#[derive(Clone)]
pub struct WarehouseUrl {
    engine: Engine,
    secret: String,
    redacted: String,
    sqlite_path: Option<PathBuf>,
}

impl WarehouseUrl {
    /// Parses `postgres://`, `postgresql://`, `mysql://`, `mariadb://` and `sqlite://PATH`
    /// (or `sqlite:PATH`) URLs.
    pub fn parse(text: &str) -> Result<Self, WarehouseError> {
        let text = text.trim();
        let redacted = redact(text);
        let invalid = |reason: &str| WarehouseError::InvalidUrl {
            url: redacted.clone(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(invalid(
                "expected postgres://..., mysql://... or sqlite://PATH",
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                // Query parameters (`?mode=...`) are natkey's business: it always opens read-only.
                let path = path.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(invalid("no database file after sqlite://"));
                }
                Ok(WarehouseUrl {
                    engine: Engine::Sqlite,
                    secret: text.to_string(),
                    redacted,
                    sqlite_path: Some(PathBuf::from(path)),
                })
            }
            "postgres" | "postgresql" | "mysql" | "mariadb" => {
                if !rest.starts_with("//") {
                    return Err(invalid(
                        "expected SCHEME://[user[:password]@]host[:port]/database",
                    ));
                }
                let parsed = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(invalid("no host"));
                }
                let engine = if scheme.starts_with("postgres") {
                    Engine::Postgres
                } else {
                    Engine::MySql
                };
                // sqlx only knows the `mysql` scheme; MariaDB speaks the same protocol.
                let secret = if scheme.eq_ignore_ascii_case("mariadb") {
                    format!("mysql:{rest}")
                } else {
                    text.to_string()
                };
                Ok(WarehouseUrl {
                    engine,
                    secret,
                    redacted,
                    sqlite_path: None,
                })
            }
            _ => Err(invalid(
                "unsupported scheme: use postgres://, mysql://, mariadb:// or sqlite://",
            )),
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL as people may see it: any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The URL with its password, for the driver only.
    pub(super) fn secret(&self) -> &str {
        &self.secret
    }

    pub(super) fn sqlite_path(&self) -> Option<&PathBuf> {
        self.sqlite_path.as_ref()
    }

    /// The database named in the URL's path, if any (`/shop` in `mysql://h/shop`).
    pub fn database(&self) -> Option<String> {
        if self.engine == Engine::Sqlite {
            return None;
        }
        let parsed = url::Url::parse(&self.secret).ok()?;
        let db = parsed.path().trim_start_matches('/');
        (!db.is_empty()).then(|| percent_decode(db))
    }
}

impl fmt::Debug for WarehouseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for WarehouseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the password of anything URL-shaped with `***`, also for text that is not a valid
/// URL (a malformed URL still must not leak its password into an error message).
pub fn redact(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_string();
    };
    format!(
        "{}{}:***{}",
        &text[..authority_start],
        &userinfo[..colon],
        &text[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_even_in_malformed_urls() {
        assert_eq!(
            redact("postgres://natkey:s3cret@db:5432/dw"),
            "postgres://natkey:***@db:5432/dw"
        );
        assert_eq!(redact("postgres://natkey@db/dw"), "postgres://natkey@db/dw");
        assert_eq!(redact("mysql://u:p@ss:w@rd@h/x"), "mysql://u:***@h/x");
        assert_eq!(redact("weird://a:b@"), "weird://a:***@");
    }

    #[test]
    fn engines_are_recognised_by_scheme() {
        let pg = WarehouseUrl::parse("postgresql://u:pw@h:5432/dw").expect("valid");
        assert_eq!(pg.engine(), Engine::Postgres);
        assert_eq!(pg.redacted(), "postgresql://u:***@h:5432/dw");
        assert_eq!(pg.database().as_deref(), Some("dw"));
        let maria = WarehouseUrl::parse("mariadb://root@127.0.0.1/shop").expect("valid");
        assert_eq!(maria.engine(), Engine::MySql);
        assert!(maria.secret().starts_with("mysql://"));
        let lite = WarehouseUrl::parse("sqlite://./dw.sqlite").expect("valid");
        assert_eq!(lite.sqlite_path(), Some(&PathBuf::from("./dw.sqlite")));
        let lite = WarehouseUrl::parse("sqlite:dw.sqlite?mode=rwc").expect("valid");
        assert_eq!(lite.sqlite_path(), Some(&PathBuf::from("dw.sqlite")));
    }

    #[test]
    fn malformed_urls_are_rejected_with_a_reason() {
        for bad in [
            "postgres//oops",
            "ftp://x/y",
            "",
            "sqlite://",
            "postgres://",
        ] {
            let err = WarehouseUrl::parse(bad).err().map(|e| e.to_string());
            assert!(err.is_some(), "{bad} should be rejected");
        }
        let err = WarehouseUrl::parse("ftp://u:hunter2@x/y")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
