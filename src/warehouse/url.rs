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

    /// `text` (an error message, say) with this URL's secrets replaced by `***`: the password
    /// and secret query values, raw and percent-decoded, and anything URL-shaped redacted.
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Ok(parsed) = url::Url::parse(&self.secret) {
            if let Some(pw) = parsed.password() {
                secrets.push(pw.to_string());
                secrets.push(percent_decode(pw));
            }
            for (name, value) in parsed.query_pairs() {
                if is_secret_param(&name) {
                    secrets.push(value.into_owned());
                }
            }
        }
        let mut out = text.to_string();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets.iter().filter(|s| s.len() >= 3) {
            out = out.replace(s.as_str(), "***");
        }
        redact_message(&out)
    }

    /// The URL for the driver, without secret query parameters, and the `?password=` value if
    /// there was one (set on the driver's options instead). sqlx logs parameters it does not
    /// know together with their values, so a secret must never reach its URL parser as one.
    pub(super) fn driver_url(&self) -> (String, Option<String>) {
        let Ok(mut parsed) = url::Url::parse(&self.secret) else {
            return (self.secret.clone(), None);
        };
        if parsed.query().is_none() {
            return (self.secret.clone(), None);
        }
        let mut password = None;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(name, value)| {
                if name.eq_ignore_ascii_case("password") {
                    password = Some(value.into_owned());
                    None
                } else if is_secret_param(&name) && !matches!(&*name, "sslkey" | "ssl-key") {
                    None
                } else {
                    Some((name.into_owned(), value.into_owned()))
                }
            })
            .collect();
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        (parsed.to_string(), password)
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

/// Replaces the secrets of anything URL-shaped with `***`: the password of the user info
/// (everything between the scheme and the *last* `@`, so a password holding a raw `/`, `?`, `#`
/// or `@` is masked whole) and the values of secret query parameters (`?password=...`,
/// `sslpassword=`, see [`is_secret_param`]). It also works for text that is not a valid URL,
/// with or without `//` after the scheme, or with no scheme at all: a malformed URL must not
/// leak its password into an error message. Masking too much is fine; leaking is not.
pub fn redact(text: &str) -> String {
    redact_query_secrets(&redact_userinfo(text))
}

/// [`redact`] for free text (an error message): every whitespace-separated word that looks
/// like a URL is redacted on its own, so the words around it stay readable.
pub fn redact_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let word_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_len);
        out.push_str(&redact(word));
        let space_len = after.len() - after.trim_start().len();
        out.push_str(&after[..space_len]);
        rest = &after[space_len..];
    }
    out
}

fn redact_userinfo(text: &str) -> String {
    let scheme_len = text
        .find(':')
        .filter(|&i| {
            let scheme = &text[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
        .map(|i| i + 1);
    let prefix_len = match scheme_len {
        // SQLite URLs hold a file path, never a password.
        Some(n) if text[..n].eq_ignore_ascii_case("sqlite:") => return text.to_string(),
        Some(n) => n + text[n..].len() - text[n..].trim_start_matches('/').len(),
        None => 0,
    };
    let (prefix, rest) = text.split_at(prefix_len);
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{prefix}{}:***{}", &userinfo[..colon], &rest[at..]),
        // `user:secret@host` without a scheme: what looked like one was the user name.
        None if !prefix.ends_with('/') && scheme_len.is_some() => {
            let colon = prefix.len() - 1;
            format!("{}:***{}", &text[..colon], &rest[at..])
        }
        None => text.to_string(),
    }
}

/// Whether a query parameter's value is a secret (`password`, `sslpassword`, `pwd`, tokens...).
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key"]
        .iter()
        .any(|s| name.contains(s))
}

/// `...?user=u&password=s3cret&sslmode=require` → `...?user=u&password=***&sslmode=require`.
/// Every `name=value` whose name follows `?`, `&`, `;`, whitespace or the start of the text.
fn redact_query_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let before = &rest[..eq];
        let name_start = before
            .rfind(|c: char| "?&;".contains(c) || c.is_whitespace())
            .map(|i| i + before[i..].chars().next().map_or(1, char::len_utf8))
            .unwrap_or(0);
        let name = &before[name_start..];
        // Inside the text (not at its start) a name only counts after a separator.
        let starts_param = name_start > 0 || out.is_empty();
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if starts_param && !name.is_empty() && is_secret_param(name) {
            let value_len = rest
                .find(|c: char| "&#;".contains(c) || c.is_whitespace())
                .unwrap_or(rest.len());
            if value_len > 0 {
                out.push_str("***");
            }
            rest = &rest[value_len..];
        }
    }
    out.push_str(rest);
    out
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
    fn passwords_with_raw_url_delimiters_are_masked_whole() {
        for (url, secret) in [
            ("postgres://natkey:pa/ss@db:5432/dw", "pa/ss"),
            ("postgres://natkey:p?ss#w@db/dw", "p?ss#w"),
            ("mysql://root:a/b?c#d@e@127.0.0.1/shop", "a/b?c#d@e"),
        ] {
            let shown = redact(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(
                shown.starts_with("postgres://natkey:***@")
                    || shown.starts_with("mysql://root:***@"),
                "{shown}"
            );
        }
        assert_eq!(
            redact("postgres://natkey:pa/ss@db:5432/dw"),
            "postgres://natkey:***@db:5432/dw"
        );
    }

    #[test]
    fn passwords_in_query_parameters_are_masked() {
        assert_eq!(
            redact("postgres://natkey@db/dw?password=s3cret&sslmode=require"),
            "postgres://natkey@db/dw?password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/dw?sslmode=require&sslpassword=k3y#frag"),
            "postgres://db/dw?sslmode=require&sslpassword=***#frag"
        );
        assert_eq!(
            redact("mysql://u:p@h/x?PASSWORD=abc;pwd=def"),
            "mysql://u:***@h/x?PASSWORD=***;pwd=***"
        );
        // Not a secret: kept.
        assert_eq!(
            redact("postgres://db/dw?application_name=a=b"),
            "postgres://db/dw?application_name=a=b"
        );
    }

    #[test]
    fn urls_without_slashes_after_the_scheme_are_masked_too() {
        assert_eq!(redact("postgres:/u:secret@h/db"), "postgres:/u:***@h/db");
        assert_eq!(redact("postgres:u:secret@h/db"), "postgres:u:***@h/db");
        assert_eq!(redact("u:secret@h/db"), "u:***@h/db");
        // SQLite URLs are paths and warehouse names are names: left alone.
        assert_eq!(redact("sqlite://./a:b@c.sqlite"), "sqlite://./a:b@c.sqlite");
        assert_eq!(redact("prod"), "prod");
    }

    #[test]
    fn secret_query_parameters_never_reach_the_drivers_url_parser() {
        let url = WarehouseUrl::parse(
            "postgres://u@h/dw?sslmode=require&password=s3cr%26t&sslpassword=k3y",
        )
        .expect("valid");
        let (driver, password) = url.driver_url();
        assert_eq!(driver, "postgres://u@h/dw?sslmode=require");
        assert_eq!(password.as_deref(), Some("s3cr&t"));
        let url = WarehouseUrl::parse("postgres://u:pw@h/dw").expect("valid");
        assert_eq!(url.driver_url(), ("postgres://u:pw@h/dw".to_string(), None));
    }

    #[test]
    fn messages_are_redacted_word_by_word() {
        assert_eq!(
            redact_message("connecting to warehouse postgres://u:pw@h/x?password=a: refused"),
            "connecting to warehouse postgres://u:***@h/x?password=*** refused"
        );
    }

    #[test]
    fn scrub_masks_the_urls_secrets_in_any_message() {
        let url = WarehouseUrl::parse("postgres://u:p%40ss%2Fw0rd@h/dw?password=Q7secret")
            .expect("valid");
        let message = "server said: bad password p@ss/w0rd (also p%40ss%2Fw0rd) and Q7secret";
        let scrubbed = url.scrub(message);
        for secret in ["p@ss/w0rd", "p%40ss%2Fw0rd", "Q7secret"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(!url.redacted().contains("Q7secret"), "{}", url.redacted());
        assert!(!url.redacted().contains("w0rd"), "{}", url.redacted());
    }

    #[test]
    fn engines_are_recognised_by_scheme() {
        let pg = WarehouseUrl::parse("postgresql://u:pw@h:5432/dw").expect("valid");
        assert_eq!(pg.engine(), Engine::Postgres);
        assert_eq!(pg.redacted(), "postgresql://u:***@h:5432/dw");
        assert_eq!(pg.database().as_deref(), Some("dw"));
        let maria = WarehouseUrl::parse("mariadb://root@127.0.0.1/shop").expect("valid");
        assert_eq!(maria.engine(), Engine::MySql);
        assert!(maria.driver_url().0.starts_with("mysql://"));
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
