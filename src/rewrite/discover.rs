//! What the warehouse tells the rewriter, read-only: the keys of the tables a task writes
//! (catalog plus the audit's key resolution) and, on PostgreSQL, the write statements recorded
//! by `pg_stat_statements`.
//!
//! **Invariant:** every query goes through [`Warehouse::query`] (a read-only session); task SQL
//! is parsed, never sent.

use crate::audit::{self, AuditOptions};
use crate::config::Config;
use crate::warehouse::{Engine, TableRef, Warehouse, WarehouseSql};

use super::{Dialect, KnownKeys, TableKeys, TableTarget};

/// Fills `keys` for every target table the warehouse has: nullability from the catalog, the
/// natural key, surrogate columns and survivor rule from the audit's key resolution (which
/// also honours natkey.toml). Returns one warning per table that could not be resolved.
pub async fn learn_warehouse_keys(
    warehouse: &mut Warehouse,
    config: &Config,
    targets: &[TableTarget],
    keys: &mut KnownKeys,
) -> Result<Vec<String>, String> {
    let tables = warehouse
        .list_tables(&[])
        .await
        .map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    let mut seen: Vec<TableRef> = Vec::new();
    for target in targets {
        let Some(table) = tables.tables.iter().find(|t| matches(target, t)) else {
            continue;
        };
        if seen.contains(table) {
            continue;
        }
        seen.push(table.clone());
        let info = match warehouse.describe(table).await {
            Ok(info) => info,
            Err(e) => {
                warnings.push(e.to_string());
                continue;
            }
        };
        let report = audit::audit_table(warehouse, table, config, &AuditOptions::default()).await;
        let Some(natural_key) = report.natural_key else {
            warnings.push(format!(
                "{table}: no natural key ({})",
                report.message.as_deref().unwrap_or("the audit found none")
            ));
            continue;
        };
        keys.add(TableKeys {
            table: crate::config::TableName {
                schema: Some(table.schema.clone()),
                name: table.name.clone(),
            },
            natural_key: natural_key.columns,
            surrogate_key: report.surrogate_key,
            nullable: info
                .columns
                .iter()
                .filter(|c| c.nullable)
                .map(|c| c.name.clone())
                .collect(),
            source: natural_key.source,
            survivor: report.survivor,
        });
    }
    Ok(warnings)
}

fn matches(target: &TableTarget, table: &TableRef) -> bool {
    let same = |a: &str, b: &str| {
        if target.quoted {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    same(&target.name.name, &table.name)
        && target
            .name
            .schema
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(&table.schema))
}

/// One write statement `pg_stat_statements` recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub queryid: String,
    pub calls: i64,
    /// The normalized text (constants replaced by `$1`, `$2` ...).
    pub query: String,
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub statements: Vec<Discovered>,
    /// Statements of other roles whose text `pg_stat_statements` hides from this role
    /// (`<insufficient privilege>`: the role lacks `pg_read_all_stats`).
    pub hidden: u64,
}

/// The INSERT/UPDATE/MERGE statements `pg_stat_statements` recorded that write to a table of
/// this warehouse (also behind a `WITH` clause), most called first. An `Err` is one line saying
/// why discovery is not possible (not PostgreSQL, extension absent, not readable — also when
/// every statement it could list is hidden from this role).
pub async fn discover(warehouse: &mut Warehouse) -> Result<Discovery, String> {
    if warehouse.engine() != Engine::Postgres {
        return Err(format!(
            "discovery reads pg_stat_statements, which {} does not have",
            warehouse.engine().name()
        ));
    }
    let installed = warehouse
        .query(
            &WarehouseSql::new(
                "SELECT CAST(count(*) AS TEXT) FROM pg_extension WHERE extname = 'pg_stat_statements'"
                    .to_string(),
            ),
            &[],
        )
        .await
        .map_err(|e| format!("pg_stat_statements is not readable: {}", one_line(&e)))?;
    if crate::warehouse::first_text(installed).as_deref() != Some("1") {
        return Err(
            "pg_stat_statements is not installed in this database (CREATE EXTENSION \
                    pg_stat_statements, with pg_stat_statements in shared_preload_libraries)"
                .to_string(),
        );
    }
    let rows = warehouse
        .query(
            &WarehouseSql::new(
                "SELECT CAST(queryid AS TEXT), CAST(calls AS TEXT), query FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query ~* '^\\s*(insert|update|merge|with)\\M' ORDER BY calls DESC LIMIT 500"
                    .to_string(),
            ),
            &[],
        )
        .await
        .map_err(|e| format!("pg_stat_statements is not readable: {}", one_line(&e)))?;
    let hidden = warehouse
        .query(
            &WarehouseSql::new(
                "SELECT CAST(count(*) AS TEXT) FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query = '<insufficient privilege>'"
                    .to_string(),
            ),
            &[],
        )
        .await
        .map_err(|e| format!("pg_stat_statements is not readable: {}", one_line(&e)))?;
    let hidden: u64 = crate::warehouse::first_text(hidden)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let tables = warehouse
        .list_tables(&[])
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let mut row = row.into_iter();
        let (Some(queryid), Some(calls), Some(query)) = (
            row.next().flatten(),
            row.next().flatten(),
            row.next().flatten(),
        ) else {
            continue;
        };
        let writes_audited_table = super::write_targets(&query, Dialect::Postgres)
            .iter()
            .any(|t| tables.tables.iter().any(|table| matches(t, table)));
        if writes_audited_table {
            out.push(Discovered {
                queryid,
                calls: calls.parse().unwrap_or(0),
                query,
            });
        }
    }
    if out.is_empty() && hidden > 0 {
        return Err(format!(
            "pg_stat_statements is not readable for this role: it hides the text of {hidden} \
             statement{} of other roles (grant pg_read_all_stats, or discover as the role that \
             runs the loads)",
            if hidden == 1 { "" } else { "s" }
        ));
    }
    Ok(Discovery {
        statements: out,
        hidden,
    })
}

fn one_line(e: &sqlx::Error) -> String {
    crate::warehouse::describe_sqlx_error(e).replace('\n', " ")
}
