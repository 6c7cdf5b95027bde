//! Webhook notifications of scheduled audits, with design.md's external-side-effect protocol
//! applied to natkey itself.
//!
//! - Each notification has an idempotency key, `natkey:<run id>:<target>`, sent as the
//!   `Idempotency-Key` header: a receiver that dedupes on it sees one message, however often
//!   natkey sends it.
//! - A ledger row is written **before** the call (`pending`, attempts counted before each
//!   call), and ends `succeeded` or `failed`. A restart between a call and the ledger update
//!   finds the row `pending` and re-sends the same body with the same key
//!   ([`Notifier::resend_pending`]).
//! - Network errors, `5xx`, `408` and `429` are retried with exponential backoff; any other
//!   answer that is not `2xx` (a `4xx`: a wrong or revoked URL, a rejected payload) fails at
//!   once, without retry.
//!
//! When to notify ([`Notification::for_run`]): a run that failed, or that found new or
//! increased duplicates compared with the previous run of the same schedule
//! ([`crate::schedule::diff`]). Not on a clean or unchanged run.
//!
//! A target's URL may hold a secret (a Slack webhook's path is one): it is never logged, stored
//! or shown; [`Target`]'s `Debug` and every error show [`Target::redacted_url`].

mod ledger;
pub mod sqlite_ledger;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::audit::report::Report;
use crate::schedule::diff::{RunDiff, TableChange, compare};
use crate::schedule::{Clock, slot_text};

pub use ledger::{
    MemoryNotificationLedger, NotificationLedger, NotificationLedgerError, NotificationRecord,
    NotificationStatus,
};

/// The body a target receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// natkey's own JSON payload (`natkey_notification: 1`).
    #[default]
    Json,
    /// Slack-compatible `{"text": "..."}` (incoming webhooks, and the many chat tools that
    /// accept the same shape).
    Slack,
}

/// One `[[notify]]` entry: `name`, `url` or `url_env`, `format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub url: Option<String>,
    /// The environment variable holding the URL (keeps a webhook secret out of the file).
    pub url_env: Option<String>,
    #[serde(default)]
    pub format: Format,
}

/// A `[[notify]]` entry natkey cannot use. Never contains the URL itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("[[notify]] {0:?}: give exactly one of url or url_env")]
    UrlOrEnv(String),
    #[error("[[notify]] {name:?}: the environment variable {var} (url_env) is not set")]
    MissingEnv { name: String, var: String },
    #[error("[[notify]] {name:?}: url {redacted}: {message}")]
    BadUrl {
        name: String,
        redacted: String,
        message: String,
    },
}

/// A notification target with its URL resolved. `Debug` shows the redacted URL.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    url: String,
    pub format: Format,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .field("format", &self.format)
            .finish()
    }
}

impl Target {
    /// Reads the URL (from the environment for `url_env`) and checks it is `http(s)://`.
    pub fn resolve(config: &TargetConfig) -> Result<Target, TargetError> {
        let url = match (&config.url, &config.url_env) {
            (Some(url), None) => url.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| TargetError::MissingEnv {
                name: config.name.clone(),
                var: var.clone(),
            })?,
            _ => return Err(TargetError::UrlOrEnv(config.name.clone())),
        };
        Target::new(&config.name, &url, config.format)
    }

    /// A target from its parts (tests, the Schedules page).
    pub fn new(name: &str, url: &str, format: Format) -> Result<Target, TargetError> {
        let bad = |message: &str| TargetError::BadUrl {
            name: name.to_string(),
            redacted: redact_url(url),
            message: message.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("expected an http:// or https:// URL"));
        }
        Ok(Target {
            name: name.to_string(),
            url: url.to_string(),
            format,
        })
    }

    /// The URL without what may be secret: scheme, host and port only
    /// (`https://hooks.slack.com/***`).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Removes the URL (and its path) from a message from the HTTP client.
    fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.url, &self.redacted_url());
        if let Ok(parsed) = url::Url::parse(&self.url) {
            let path = parsed.path();
            if path.len() > 1 {
                out = out.replace(path, "/***");
            }
            if let Some(query) = parsed.query() {
                out = out.replace(query, "***");
            }
        }
        out
    }
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}/***", u.scheme())
        }
        Err(_) => "***".to_string(),
    }
}

/// The idempotency key of a run's notification to one target.
pub fn idempotency_key(run_id: i64, target: &str) -> String {
    format!("natkey:{run_id}:{target}")
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationKind {
    /// The run failed (warehouse down, timeout, ...).
    Failed { reason: String },
    /// The run found new or increased duplicates.
    Duplicates {
        diff: RunDiff,
        /// Excess rows over the whole warehouse now.
        excess_rows: i64,
        tables_with_duplicates: usize,
    },
}

/// One run's notification, before it is addressed to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub run_id: i64,
    pub schedule: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The warehouse's name (never its URL).
    pub warehouse: String,
    pub kind: NotificationKind,
}

impl Notification {
    /// The notification a finished run deserves, if any: a failed run always; a successful one
    /// only when it found new or increased duplicates compared with `previous` (the previous
    /// run of the same schedule; `None` for its first run).
    pub fn for_run(
        run_id: i64,
        schedule: &str,
        scheduled_for: Option<DateTime<Utc>>,
        warehouse: &str,
        previous: Option<&Report>,
        current: Result<&Report, &str>,
    ) -> Option<Notification> {
        let kind = match current {
            Err(reason) => NotificationKind::Failed {
                reason: reason.to_string(),
            },
            Ok(report) => {
                let diff = compare(previous, report);
                if !diff.got_worse() {
                    return None;
                }
                NotificationKind::Duplicates {
                    diff,
                    excess_rows: report.summary.excess_rows,
                    tables_with_duplicates: report.summary.with_duplicates,
                }
            }
        };
        Some(Notification {
            run_id,
            schedule: schedule.to_string(),
            scheduled_for,
            warehouse: warehouse.to_string(),
            kind,
        })
    }

    /// The body for `format`, carrying `key`.
    pub fn body(&self, format: Format, key: &str) -> String {
        match format {
            Format::Json => self.json(key).to_string(),
            Format::Slack => json!({ "text": self.slack_text() }).to_string(),
        }
    }

    fn json(&self, key: &str) -> serde_json::Value {
        let (status, reason, excess, with_dups, diff) = match &self.kind {
            NotificationKind::Failed { reason } => {
                ("failed", Some(reason.as_str()), None, None, None)
            }
            NotificationKind::Duplicates {
                diff,
                excess_rows,
                tables_with_duplicates,
            } => (
                "duplicates",
                None,
                Some(*excess_rows),
                Some(*tables_with_duplicates),
                Some(diff),
            ),
        };
        json!({
            "natkey_notification": 1,
            "idempotency_key": key,
            "run_id": self.run_id,
            "schedule": self.schedule,
            "scheduled_for": self.scheduled_for.map(slot_text),
            "warehouse": self.warehouse,
            "status": status,
            "reason": reason,
            "excess_rows": excess,
            "tables_with_duplicates": with_dups,
            "new_duplicates": diff.map(|d| &d.new_duplicates),
            "worse": diff.map(|d| &d.worse),
            "fixed": diff.map(|d| &d.fixed),
        })
    }

    /// The Slack message. Table names are data: `&`, `<` and `>` are escaped as Slack asks.
    pub fn slack_text(&self) -> String {
        let head = format!(
            "natkey: schedule {} (warehouse {}), run {}",
            slack_escape(&self.schedule),
            slack_escape(&self.warehouse),
            self.run_id
        );
        match &self.kind {
            NotificationKind::Failed { reason } => {
                format!("{head} failed: {}", slack_escape(reason))
            }
            NotificationKind::Duplicates {
                diff, excess_rows, ..
            } => {
                let mut text = format!(
                    "{head} found new or increased duplicates ({} excess rows in the warehouse).",
                    thousands(*excess_rows)
                );
                let lists: [(&str, &Vec<TableChange>); 3] = [
                    ("Newly with duplicates", &diff.new_duplicates),
                    ("Worse", &diff.worse),
                    ("Fixed", &diff.fixed),
                ];
                for (title, list) in lists {
                    if list.is_empty() {
                        continue;
                    }
                    text.push_str(&format!("\n*{title}*"));
                    for change in list.iter().take(SLACK_TABLES) {
                        text.push_str(&format!(
                            "\n• {}.{}: {}",
                            slack_escape(&change.schema),
                            slack_escape(&change.name),
                            describe_change(change)
                        ));
                    }
                    if list.len() > SLACK_TABLES {
                        text.push_str(&format!("\n• and {} more", list.len() - SLACK_TABLES));
                    }
                }
                text
            }
        }
    }
}

/// Tables listed per section of a Slack message.
const SLACK_TABLES: usize = 10;

fn describe_change(c: &TableChange) -> String {
    let now = c.excess_rows.unwrap_or(0);
    match c.previous_excess_rows {
        Some(before) if before > 0 => {
            format!("{} → {} excess rows", thousands(before), thousands(now))
        }
        _ => format!("{} excess rows", thousands(now)),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How often and how patiently a notification is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per delivery (a re-send after a restart starts a new count).
    pub max_attempts: u32,
    /// The wait after the first failed call; doubled after each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// For one call, connect to answer.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failed`-th failed call (1-based): `first_backoff * 2^(failed-1)`,
    /// at most `max_backoff`.
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How a notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered `2xx`; `attempts` counts every call for this key.
    Delivered { attempts: u32 },
    /// The ledger already says so: nothing was sent.
    AlreadyDelivered,
    /// Failed: a `4xx` (no retry), or every retry used up.
    Failed { attempts: u32, error: String },
    /// The ledger already says it failed: nothing was sent.
    AlreadyFailed { error: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Ledger(#[from] NotificationLedgerError),
    #[error("notification {key:?}: no [[notify]] target named {target:?}")]
    UnknownTarget { key: String, target: String },
}

/// What one call's answer means.
enum CallOutcome {
    Delivered,
    Retry(String),
    Permanent(String),
}

/// Sends notifications through a ledger: written before each call, updated after it.
pub struct Notifier<L> {
    ledger: L,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    agent: ureq::Agent,
}

impl<L: NotificationLedger> Notifier<L> {
    pub fn new(ledger: L, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(policy.timeout))
            // Status codes are answers to classify, not errors.
            .http_status_as_error(false)
            // A webhook that redirects is misconfigured: report it rather than re-POST.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("natkey/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Notifier {
            ledger,
            clock,
            policy,
            agent,
        }
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Sends `notification` to `target`, once: the ledger row for its idempotency key is
    /// written first; a key already delivered or failed is not sent again.
    pub async fn send(
        &self,
        target: &Target,
        notification: &Notification,
    ) -> Result<Delivery, NotifyError> {
        let key = idempotency_key(notification.run_id, &target.name);
        let now = self.clock.now();
        let record = NotificationRecord {
            body: notification.body(target.format, &key),
            key,
            run_id: notification.run_id,
            target: target.name.clone(),
            status: NotificationStatus::Pending,
            attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let row = self.ledger.begin(&record).await?;
        self.deliver(target, row).await
    }

    /// Re-sends every notification the ledger holds as `pending` (natkey stopped between a
    /// call and its ledger update, or while waiting to retry), with the same key and body. A
    /// row whose target is no longer in `targets` (removed from natkey.toml) is marked failed
    /// ("target no longer configured"), so it stops blocking retention, and the other rows are
    /// still re-sent.
    pub async fn resend_pending(
        &self,
        targets: &[Target],
    ) -> Result<Vec<(String, Delivery)>, NotifyError> {
        let mut out = Vec::new();
        for row in self.ledger.pending().await? {
            let Some(target) = targets.iter().find(|t| t.name == row.target) else {
                let error = format!("target {:?} no longer configured", row.target);
                tracing::warn!(key = %row.key, "notification not re-sent: {error}");
                self.ledger
                    .update(
                        &row.key,
                        NotificationStatus::Failed,
                        Some(&error),
                        self.clock.now(),
                    )
                    .await?;
                out.push((
                    row.key,
                    Delivery::Failed {
                        attempts: row.attempts,
                        error,
                    },
                ));
                continue;
            };
            let key = row.key.clone();
            out.push((key, self.deliver(target, row).await?));
        }
        Ok(out)
    }

    async fn deliver(
        &self,
        target: &Target,
        row: NotificationRecord,
    ) -> Result<Delivery, NotifyError> {
        match row.status {
            NotificationStatus::Succeeded => return Ok(Delivery::AlreadyDelivered),
            NotificationStatus::Failed => {
                return Ok(Delivery::AlreadyFailed {
                    error: row.last_error,
                });
            }
            NotificationStatus::Pending => {}
        }
        if row.attempts > 0 {
            tracing::info!(
                key = %row.key,
                target = %target.name,
                "re-sending a notification that {} earlier call(s) may have delivered, with the same Idempotency-Key",
                row.attempts
            );
        }
        let mut failed_here = 0;
        loop {
            let attempts = self.ledger.attempt(&row.key, self.clock.now()).await?;
            let outcome = self.call(target, &row.key, &row.body).await;
            let now = self.clock.now();
            match outcome {
                CallOutcome::Delivered => {
                    self.ledger
                        .update(&row.key, NotificationStatus::Succeeded, None, now)
                        .await?;
                    return Ok(Delivery::Delivered { attempts });
                }
                CallOutcome::Permanent(error) => {
                    tracing::warn!(key = %row.key, target = %target.name, "notification failed: {error}");
                    self.ledger
                        .update(&row.key, NotificationStatus::Failed, Some(&error), now)
                        .await?;
                    return Ok(Delivery::Failed { attempts, error });
                }
                CallOutcome::Retry(error) => {
                    failed_here += 1;
                    if failed_here >= self.policy.max_attempts {
                        let error = format!("{error} (gave up after {failed_here} attempts)");
                        tracing::warn!(key = %row.key, target = %target.name, "notification failed: {error}");
                        self.ledger
                            .update(&row.key, NotificationStatus::Failed, Some(&error), now)
                            .await?;
                        return Ok(Delivery::Failed { attempts, error });
                    }
                    self.ledger
                        .update(&row.key, NotificationStatus::Pending, Some(&error), now)
                        .await?;
                    let wait = self.policy.backoff(failed_here);
                    tracing::info!(key = %row.key, target = %target.name, "notification attempt failed ({error}); retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One POST, on a blocking thread (ureq is a blocking client).
    async fn call(&self, target: &Target, key: &str, body: &str) -> CallOutcome {
        let agent = self.agent.clone();
        let url = target.url.clone();
        let key = key.to_string();
        let body = body.to_string();
        let answer = tokio::task::spawn_blocking(move || {
            agent
                .post(url.as_str())
                .header("Idempotency-Key", key.as_str())
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
                .map(|response| response.status())
        })
        .await;
        match answer {
            Err(join) => CallOutcome::Retry(format!("the HTTP call did not finish: {join}")),
            Ok(Err(e)) => CallOutcome::Retry(target.scrub(&e.to_string())),
            Ok(Ok(status)) if status.is_success() => CallOutcome::Delivered,
            Ok(Ok(status)) => {
                let message = format!("{} answered HTTP {status}", target.redacted_url());
                let code = status.as_u16();
                // 408 and 429 say "later", not "never": they are retried like a 5xx.
                if status.is_server_error() || code == 408 || code == 429 {
                    CallOutcome::Retry(message)
                } else {
                    CallOutcome::Permanent(message)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
