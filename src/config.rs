//! `natkey.toml`: audit settings and what people know about their tables.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::warehouse::TableRef;

/// The whole configuration file. Unknown keys are errors, so a typo never silently does nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default, rename = "table")]
    pub tables: Vec<TableConfig>,
    /// `[[warehouse]]`: the warehouses `natkey serve` audits, by name.
    #[serde(default, rename = "warehouse")]
    pub warehouses: Vec<WarehouseConfig>,
    /// `[server]`: where `natkey serve` listens and who may use it.
    #[serde(default)]
    pub server: ServerSettings,
    /// `[store]`: natkey's own SQLite database (runs, reports, confirmed keys).
    #[serde(default)]
    pub store: StoreSettings,
    /// `[[schedule]]`: nightly audits `natkey serve` runs.
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<crate::schedule::ScheduleConfig>,
    /// `[[notify]]`: webhook targets schedules notify.
    #[serde(default, rename = "notify")]
    pub notify: Vec<crate::notify::TargetConfig>,
}

/// One `[[warehouse]]` entry of `natkey serve`. The URL comes from `url`, or (to keep a password
/// out of the file) from the environment variable named by `url_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    pub name: String,
    pub url: Option<String>,
    pub url_env: Option<String>,
    /// Only these schemas (all non-system schemas when absent).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Only these tables (`schema.table` or `table`; every table when absent).
    #[serde(default)]
    pub tables: Vec<TableName>,
}

impl WarehouseConfig {
    /// The URL, read from the environment when `url_env` names a variable.
    pub fn resolve_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_env) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                format!(
                    "[[warehouse]] {:?}: the environment variable {var} (url_env) is not set",
                    self.name
                )
            }),
            _ => Err(format!(
                "[[warehouse]] {:?}: give exactly one of url or url_env",
                self.name
            )),
        }
    }
}

/// `[server]` of `natkey serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `host:port` (default `127.0.0.1:8080`).
    pub bind: Option<String>,
    #[serde(default)]
    pub auth: AuthMode,
    /// For `auth = "token"`: the environment variable holding the shared token.
    pub token_env: Option<String>,
    /// For `auth = "proxy"`: the header the reverse proxy sets (default `X-Forwarded-User`).
    pub proxy_header: Option<String>,
    /// For `auth = "proxy"`: the proxy addresses trusted to set that header (IP addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The address people open natkey at behind a reverse proxy that rewrites `Host`
    /// (`https://natkey.example.com`): accepted as the `Origin` of page POSTs.
    pub public_origin: Option<String>,
}

/// Who may use `natkey serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who can reach the address (the default; meant for loopback).
    #[default]
    None,
    /// A shared token: `Authorization: Bearer ...` or the login form's cookie.
    Token,
    /// A user header set by the company's reverse proxy, from `trusted_proxies` only.
    Proxy,
}

/// `[store]` of `natkey serve` (and `natkey audit --save`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Default `natkey-data/natkey.db`.
    pub path: Option<PathBuf>,
    /// Retention: finished runs kept per warehouse (default 90; the latest succeeded run is
    /// always kept).
    pub keep_runs: Option<u32>,
}

/// Runs kept per warehouse when `[store] keep_runs` is not set.
pub const DEFAULT_KEEP_RUNS: u32 = 90;

impl StoreSettings {
    /// The store's file (`natkey-data/natkey.db` unless `path` says otherwise).
    pub fn path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("natkey-data/natkey.db"))
    }

    pub fn keep_runs(&self) -> u32 {
        self.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Rows profiled per table when inferring a natural key (default 20000).
    pub sample_rows: Option<usize>,
    /// Statement timeout for every query natkey runs (default 600).
    pub statement_timeout_secs: Option<u64>,
    /// PostgreSQL `work_mem` for natkey's aggregates (default `512MB`).
    pub work_mem: Option<String>,
}

/// One `[[table]]` entry: the facts about a table that override detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table`, or `table` for that table in any schema.
    pub name: TableName,
    pub natural_key: Option<Vec<String>>,
    pub surrogate_key: Option<Vec<String>>,
    pub load_metadata: Option<Vec<String>>,
    pub measures: Option<Vec<String>>,
    pub survivor: Option<SurvivorRule>,
    /// Columns that may hold NULL, for `natkey rewrite` without `--warehouse` (which reads
    /// nullability from the catalog).
    pub nullable: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        for (i, table) in config.tables.iter().enumerate() {
            let invalid = |message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("[[table]] #{} ({}): {message}", i + 1, table.name),
            };
            for (field, list) in [
                ("natural_key", &table.natural_key),
                ("surrogate_key", &table.surrogate_key),
                ("load_metadata", &table.load_metadata),
                ("measures", &table.measures),
                ("nullable", &table.nullable),
            ] {
                if let Some(list) = list {
                    if field == "natural_key" && list.is_empty() {
                        return Err(invalid("natural_key must name at least one column".into()));
                    }
                    if let Some(c) = list.iter().find(|c| c.is_empty()) {
                        return Err(invalid(format!("{field} has an empty column name {c:?}")));
                    }
                }
            }
        }
        config
            .check_schedules()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// Checks `[[schedule]]` and `[[notify]]`: unique names, a valid cron pattern and zone
    /// (errors name the schedule and the field), a `[[warehouse]]` and `[[notify]]` entries
    /// that exist, `keep_runs` of at least 1.
    fn check_schedules(&self) -> Result<(), String> {
        if self.store.keep_runs == Some(0) {
            return Err(
                "[store] keep_runs must be at least 1 (the latest run is always kept)".into(),
            );
        }
        let mut targets: Vec<&str> = Vec::new();
        for t in &self.notify {
            if t.name.trim().is_empty() {
                return Err("[[notify]]: name must not be empty".into());
            }
            if targets.contains(&t.name.as_str()) {
                return Err(format!("[[notify]] {:?} is listed twice", t.name));
            }
            if t.url.is_some() == t.url_env.is_some() {
                return Err(format!(
                    "[[notify]] {:?}: give exactly one of url or url_env",
                    t.name
                ));
            }
            targets.push(&t.name);
        }
        let warehouses: Vec<&str> = self.warehouses.iter().map(|w| w.name.as_str()).collect();
        let mut names: Vec<&str> = Vec::new();
        for entry in &self.schedules {
            crate::schedule::Schedule::check(entry, &warehouses, &targets)
                .map_err(|e| e.to_string())?;
            if names.contains(&entry.name.as_str()) {
                return Err(format!("[[schedule]] {:?} is listed twice", entry.name));
            }
            names.push(&entry.name);
        }
        Ok(())
    }

    /// The `[[table]]` entry for a table: an exact `schema.table` match wins over a bare name.
    pub fn table(&self, table: &TableRef) -> Option<&TableConfig> {
        self.tables
            .iter()
            .find(|t| {
                t.name.schema.as_deref() == Some(table.schema.as_str()) && t.name.name == table.name
            })
            .or_else(|| {
                self.tables
                    .iter()
                    .find(|t| t.name.schema.is_none() && t.name.name == table.name)
            })
    }
}

/// A table name as people write it: `table`, `schema.table`, with double quotes around a part
/// that contains a dot or a quote (`"my.schema"."Weird ""Table"""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn matches(&self, table: &TableRef) -> bool {
        self.name == table.name && self.schema.as_ref().is_none_or(|s| *s == table.schema)
    }
}

impl FromStr for TableName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut chars = text.trim().chars().peekable();
        let mut quoted_part = false;
        while let Some(c) = chars.next() {
            match c {
                '"' if current.is_empty() && !quoted_part => {
                    quoted_part = true;
                    loop {
                        match chars.next() {
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                current.push('"');
                            }
                            Some('"') => break,
                            Some(c) => current.push(c),
                            None => {
                                return Err(format!("unterminated quote in table name {text:?}"));
                            }
                        }
                    }
                }
                '.' => {
                    parts.push(std::mem::take(&mut current));
                    quoted_part = false;
                }
                c if quoted_part => {
                    return Err(format!(
                        "unexpected {c:?} after a quoted part in table name {text:?}"
                    ));
                }
                c => current.push(c),
            }
        }
        parts.push(current);
        if parts.iter().any(String::is_empty) {
            return Err(format!(
                "table name {text:?} should be `table` or `schema.table` (quote a part that contains a dot)"
            ));
        }
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                name: parts.remove(0),
            }),
            2 => {
                let name = parts.remove(1);
                Ok(TableName {
                    schema: Some(parts.remove(0)),
                    name,
                })
            }
            _ => Err(format!(
                "table name {text:?} has more than two parts; quote a part that contains a dot"
            )),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if s.contains(['.', '"']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        match &self.schema {
            Some(s) => write!(f, "{}.{}", part(s), part(&self.name)),
            None => f.write_str(&part(&self.name)),
        }
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which row of a duplicate group a cleanup keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SurvivorRule {
    /// `latest:COL`: the row with the greatest COL (NULLs last).
    Latest(String),
    /// `earliest:COL`: the row with the smallest COL (NULLs last).
    Earliest(String),
    /// `lowest_surrogate`: the row with the smallest surrogate key.
    LowestSurrogate,
}

impl SurvivorRule {
    /// The column the rule orders by, when it names one.
    pub fn column(&self) -> Option<&str> {
        match self {
            SurvivorRule::Latest(c) | SurvivorRule::Earliest(c) => Some(c),
            SurvivorRule::LowestSurrogate => None,
        }
    }
}

impl FromStr for SurvivorRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "survivor rule {text:?} should be latest:COLUMN, earliest:COLUMN or lowest_surrogate"
            )
        };
        match text.split_once(':') {
            Some(("latest", col)) if !col.is_empty() => Ok(SurvivorRule::Latest(col.to_string())),
            Some(("earliest", col)) if !col.is_empty() => {
                Ok(SurvivorRule::Earliest(col.to_string()))
            }
            None if text == "lowest_surrogate" => Ok(SurvivorRule::LowestSurrogate),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for SurvivorRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SurvivorRule::Latest(c) => write!(f, "latest:{c}"),
            SurvivorRule::Earliest(c) => write!(f, "earliest:{c}"),
            SurvivorRule::LowestSurrogate => f.write_str("lowest_surrogate"),
        }
    }
}

impl<'de> Deserialize<'de> for SurvivorRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for SurvivorRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_with_quotes_and_dots() {
        let t: TableName = "finance.daily_revenue_summary".parse().expect("valid");
        assert_eq!(t.schema.as_deref(), Some("finance"));
        assert_eq!(t.name, "daily_revenue_summary");
        let t: TableName = r#""my.schema"."Weird ""Table"" <script>""#.parse().expect("valid");
        assert_eq!(t.schema.as_deref(), Some("my.schema"));
        assert_eq!(t.name, r#"Weird "Table" <script>"#);
        assert_eq!(t.to_string(), r#""my.schema"."Weird ""Table"" <script>""#);
        let t: TableName = "daily_orders".parse().expect("valid");
        assert_eq!(t.schema, None);
        for bad in ["", "a.", ".b", "a.b.c", "\"open", "\"a\"b"] {
            assert!(bad.parse::<TableName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serve_sections_read_warehouses_server_and_store() {
        let text = "[[warehouse]]\nname = \"dw\"\nurl_env = \"NATKEY_TEST_UNSET_VAR_DW\"\n\n\
                    [[warehouse]]\nname = \"local\"\nurl = \"sqlite://./dw.sqlite\"\n\n\
                    [server]\nbind = \"0.0.0.0:9000\"\nauth = \"token\"\n\
                    token_env = \"NK_TOKEN\"\n\n[store]\npath = \"state/natkey.db\"\n";
        let config = Config::parse(text, Path::new("natkey.toml")).expect("valid");
        assert_eq!(config.warehouses.len(), 2);
        assert_eq!(
            config.warehouses[1].resolve_url().as_deref(),
            Ok("sqlite://./dw.sqlite")
        );
        let missing = config.warehouses[0]
            .resolve_url()
            .expect_err("unset variable");
        assert!(missing.contains("NATKEY_TEST_UNSET_VAR_DW"), "{missing}");
        assert_eq!(config.server.auth, AuthMode::Token);
        assert_eq!(config.server.bind.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(
            config.store.path.as_deref(),
            Some(Path::new("state/natkey.db"))
        );
        let err = Config::parse("[server]\nauth = \"basic\"\n", Path::new("natkey.toml"))
            .expect_err("unknown auth");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn config_errors_name_the_line_and_the_problem() {
        let path = Path::new("natkey.toml");
        let err = Config::parse("[[table]]\nname = \"t\"\nnatrual_key = [\"a\"]\n", path)
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("line 3") && text.contains("natrual_key"),
            "{text}"
        );
        let err = Config::parse("[[table]]\nname = \"t\"\nsurvivor = \"bogus\"\n", path)
            .expect_err("bad survivor");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = Config::parse("[[table]]\nname = \"t\"\nnatural_key = []\n", path)
            .expect_err("empty key");
        assert!(err.to_string().contains("at least one column"), "{err}");
    }

    #[test]
    fn an_exact_schema_match_wins_over_a_bare_name() {
        let config = Config::parse(
            "[[table]]\nname = \"orders\"\nnatural_key = [\"a\"]\n\
             [[table]]\nname = \"sales.orders\"\nnatural_key = [\"b\"]\n",
            Path::new("natkey.toml"),
        )
        .expect("valid");
        let key = |schema: &str| {
            config
                .table(&TableRef::new(schema, "orders"))
                .and_then(|t| t.natural_key.clone())
        };
        assert_eq!(key("sales"), Some(vec!["b".to_string()]));
        assert_eq!(key("public"), Some(vec!["a".to_string()]));
    }

    #[test]
    fn schedule_errors_name_the_schedule_and_the_field() {
        let path = Path::new("natkey.toml");
        let base = "[[warehouse]]\nname = \"dw\"\nurl = \"sqlite://dw.sqlite\"\n\
                    [[notify]]\nname = \"oncall\"\nurl = \"https://hooks.example.com/x\"\n";
        let with = |schedule: &str| {
            Config::parse(
                &format!("{base}[[schedule]]\nname = \"nightly\"\n{schedule}"),
                path,
            )
        };
        let ok = with("warehouse = \"dw\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nnotify = [\"oncall\"]\n")
            .expect("valid");
        assert_eq!(ok.schedules.len(), 1);
        for (schedule, needles) in [
            (
                "warehouse = \"dw\"\ncron = \"0 25 * * *\"\ntimezone = \"UTC\"\n",
                &["schedule \"nightly\"", "cron \"0 25 * * *\""][..],
            ),
            (
                "warehouse = \"dw\"\ncron = \"0 2 * *\"\ntimezone = \"UTC\"\n",
                &["schedule \"nightly\"", "expected 5 fields"][..],
            ),
            (
                "warehouse = \"dw\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/Berlinn\"\n",
                &["schedule \"nightly\"", "timezone", "Europe/Berlinn"][..],
            ),
            (
                "warehouse = \"dwh\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\n",
                &["schedule \"nightly\"", "warehouse", "\"dwh\""][..],
            ),
            (
                "warehouse = \"dw\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\nnotify = [\"pager\"]\n",
                &["schedule \"nightly\"", "notify", "\"pager\""][..],
            ),
            (
                "warehouse = \"dw\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\ncorn = 1\n",
                &["line", "corn"][..],
            ),
        ] {
            let err = with(schedule).expect_err(schedule).to_string();
            for needle in needles {
                assert!(err.contains(needle), "{needle:?} not in {err}");
            }
        }
        let err = Config::parse("[store]\nkeep_runs = 0\n", path).expect_err("keep 0");
        assert!(err.to_string().contains("keep_runs"), "{err}");
    }
}
