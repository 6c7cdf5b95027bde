//! The SQL dialects natkey writes: the engines it connects to, and the warehouses it only
//! exports plans for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::warehouse::Engine;

/// A dialect natkey writes SQL for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Postgres,
    /// MySQL 8 and MariaDB 10.6+.
    #[serde(rename = "mysql")]
    MySql,
    Sqlite,
    Snowflake,
    #[serde(rename = "bigquery")]
    BigQuery,
    Redshift,
    Databricks,
}

impl Dialect {
    pub const ALL: [Dialect; 7] = [
        Dialect::Postgres,
        Dialect::MySql,
        Dialect::Sqlite,
        Dialect::Snowflake,
        Dialect::BigQuery,
        Dialect::Redshift,
        Dialect::Databricks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
            Dialect::Snowflake => "snowflake",
            Dialect::BigQuery => "bigquery",
            Dialect::Redshift => "redshift",
            Dialect::Databricks => "databricks",
        }
    }

    /// Whether the engine rejects a second row with the same UNIQUE/PRIMARY KEY. Snowflake
    /// (standard tables), BigQuery, Redshift and Databricks keep such constraints informational.
    pub fn enforces_unique(self) -> bool {
        matches!(self, Dialect::Postgres | Dialect::MySql | Dialect::Sqlite)
    }

    /// The engine natkey can connect to for this dialect, if any.
    pub fn engine(self) -> Option<Engine> {
        match self {
            Dialect::Postgres => Some(Engine::Postgres),
            Dialect::MySql => Some(Engine::MySql),
            Dialect::Sqlite => Some(Engine::Sqlite),
            _ => None,
        }
    }

    /// Quotes an identifier for this dialect. **Invariant:** the only place (with
    /// [`Engine::quote_ident`], which it delegates to) where a name becomes SQL text.
    pub fn quote_ident(self, ident: &str) -> String {
        let plain = |s: &str| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !sqlparser::keywords::ALL_KEYWORDS.contains(&s.to_ascii_uppercase().as_str())
        };
        match self {
            Dialect::Postgres | Dialect::MySql | Dialect::Sqlite => self
                .engine()
                .map(|e| e.quote_ident(ident))
                .unwrap_or_default(),
            // Snowflake folds unquoted names to upper case and Redshift to lower case: quoting a
            // plain lower-case name would make it case-sensitive, so plain names stay unquoted.
            Dialect::Snowflake | Dialect::Redshift if plain(ident) => ident.to_string(),
            Dialect::Snowflake | Dialect::Redshift => {
                format!("\"{}\"", ident.replace('"', "\"\""))
            }
            Dialect::BigQuery => format!("`{}`", ident.replace('\\', "\\\\").replace('`', "\\`")),
            Dialect::Databricks => format!("`{}`", ident.replace('`', "``")),
        }
    }

    /// A string literal.
    pub fn quote_literal(self, text: &str) -> String {
        match self {
            Dialect::MySql | Dialect::BigQuery | Dialect::Databricks => {
                format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
            }
            _ => format!("'{}'", text.replace('\'', "''")),
        }
    }

    /// `left` and `right` compared so that two NULLs are equal (two NULL keys are the same
    /// key): the one spelling the planner and the rewriter share. Redshift has no `IS NOT
    /// DISTINCT FROM`, so it gets the expanded form.
    pub fn null_safe_eq(self, left: &str, right: &str) -> String {
        match self {
            Dialect::MySql => format!("{left} <=> {right}"),
            Dialect::Sqlite => format!("{left} IS {right}"),
            Dialect::Redshift => {
                format!("({left} = {right} OR ({left} IS NULL AND {right} IS NULL))")
            }
            Dialect::Postgres | Dialect::Snowflake | Dialect::BigQuery | Dialect::Databricks => {
                format!("{left} IS NOT DISTINCT FROM {right}")
            }
        }
    }

    /// sqlparser's dialect, to check the SQL natkey writes and to read task SQL.
    pub fn parser(self) -> Box<dyn sqlparser::dialect::Dialect> {
        use sqlparser::dialect as d;
        match self {
            Dialect::Postgres => Box::new(d::PostgreSqlDialect {}),
            Dialect::MySql => Box::new(d::MySqlDialect {}),
            Dialect::Sqlite => Box::new(d::SQLiteDialect {}),
            Dialect::Snowflake => Box::new(d::SnowflakeDialect {}),
            Dialect::BigQuery => Box::new(d::BigQueryDialect {}),
            Dialect::Redshift => Box::new(d::RedshiftSqlDialect {}),
            Dialect::Databricks => Box::new(d::DatabricksDialect {}),
        }
    }
}

impl From<Engine> for Dialect {
    fn from(engine: Engine) -> Self {
        match engine {
            Engine::Postgres => Dialect::Postgres,
            Engine::MySql => Dialect::MySql,
            Engine::Sqlite => Dialect::Sqlite,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let aliases = [
            ("postgresql", "postgres"),
            ("mariadb", "mysql"),
            ("spark", "databricks"),
        ];
        let name = aliases
            .iter()
            .find(|(alias, _)| *alias == lower)
            .map(|(_, name)| *name)
            .unwrap_or(lower.as_str());
        Dialect::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown dialect {text:?}: use one of {}",
                    Dialect::ALL.map(Dialect::name).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_names_round_trip_and_unknown_ones_list_the_choices() {
        for d in Dialect::ALL {
            assert_eq!(d.name().parse::<Dialect>(), Ok(d));
        }
        assert_eq!("MariaDB".parse::<Dialect>(), Ok(Dialect::MySql));
        let err = "oracle".parse::<Dialect>().expect_err("unknown");
        assert!(err.contains("snowflake") && err.contains("oracle"), "{err}");
    }

    #[test]
    fn identifiers_are_quoted_per_dialect() {
        let hostile = r#"Weird "Table" `x`"#;
        assert_eq!(
            Dialect::Postgres.quote_ident(hostile),
            r#""Weird ""Table"" `x`""#
        );
        assert_eq!(
            Dialect::MySql.quote_ident(hostile),
            r#"`Weird "Table" ``x```"#
        );
        assert_eq!(
            Dialect::Databricks.quote_ident(hostile),
            r#"`Weird "Table" ``x```"#
        );
        assert_eq!(
            Dialect::BigQuery.quote_ident(hostile),
            r#"`Weird "Table" \`x\``"#
        );
        assert_eq!(
            Dialect::Snowflake.quote_ident(hostile),
            r#""Weird ""Table"" `x`""#
        );
        assert_eq!(
            Dialect::Snowflake.quote_ident("daily_orders"),
            "daily_orders"
        );
        assert_eq!(Dialect::Redshift.quote_ident("Daily"), "\"Daily\"");
        assert_eq!(Dialect::MySql.quote_literal(r"it's \ ok"), r"'it\'s \\ ok'");
        assert_eq!(Dialect::Postgres.quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn null_safe_equality_is_spelled_per_dialect_and_parses_there() {
        for d in Dialect::ALL {
            let expected = match d {
                Dialect::MySql => "a.k <=> b.k",
                Dialect::Sqlite => "a.k IS b.k",
                Dialect::Redshift => "(a.k = b.k OR (a.k IS NULL AND b.k IS NULL))",
                _ => "a.k IS NOT DISTINCT FROM b.k",
            };
            let eq = d.null_safe_eq("a.k", "b.k");
            assert_eq!(eq, expected, "{d}");
            let sql = format!("SELECT 1 FROM a JOIN b ON {eq} AND a.x = b.x");
            assert!(
                sqlparser::parser::Parser::parse_sql(d.parser().as_ref(), &sql).is_ok(),
                "{d}: {sql}"
            );
        }
    }
}
