//! Natural keys learned from a dedupe job: the SQL some team wrote to clean up after a
//! non-idempotent task already says which columns identify a record and which row to keep.
//!
//! - `ROW_NUMBER() OVER (PARTITION BY key ORDER BY survivor)`: the key is the PARTITION BY,
//!   the survivor rule the first ORDER BY column (DESC keeps the latest).
//! - a self-join `DELETE FROM t a USING t b WHERE a.k = b.k AND a.id < b.id` (or MySQL's
//!   `DELETE a FROM t a JOIN t b ON ...`): the key is the columns matched between the two
//!   copies, the survivor the column compared.
//! - `DELETE FROM t WHERE id NOT IN (SELECT min(id) FROM t GROUP BY key)`: the key is the
//!   GROUP BY, `min` keeps the lowest, `max` the highest.
//!
//! The keys feed key resolution as source `dedupe_job` (`audit`, `plan` and `rewrite`).

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Delete, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, InTarget, JoinConstraint, JoinOperator, ObjectName, OrderByExpr, Query, SetExpr,
    Statement, TableFactor, TableWithJoins, WindowType, With, visit_expressions, visit_relations,
};

use super::source::FileContext;
use super::{Dialect, KnownKeys};
use crate::config::{SurvivorRule, TableName};

/// A natural key (and survivor rule) a dedupe job reveals for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedKey {
    pub table: TableName,
    pub natural_key: Vec<String>,
    pub survivor: Option<SurvivorRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    #[error("the dedupe job does not parse: {0}")]
    Parse(String),
    #[error(
        "no dedupe pattern found in the dedupe job: natkey reads ROW_NUMBER() OVER (PARTITION BY \
         ... ORDER BY ...), a self-join DELETE ... USING, and DELETE ... WHERE id NOT IN (SELECT \
         min(id) ... GROUP BY ...)"
    )]
    NothingLearned,
}

/// Reads a dedupe job and returns what it says about each table it cleans, in file order
/// (one entry per table; the first pattern found for a table wins).
pub fn learn_keys(sql: &str, dialect: Dialect) -> Result<Vec<LearnedKey>, DedupeError> {
    let keys = KnownKeys::new();
    let cx = FileContext::new("dedupe.sql", sql, dialect, &keys);
    let mut learned: Vec<LearnedKey> = Vec::new();
    for stmt in &cx.statements {
        for key in learn_from(&cx, &stmt.ast, stmt.with.as_ref()) {
            if !learned.iter().any(|l| l.table == key.table) && !key.natural_key.is_empty() {
                learned.push(key);
            }
        }
    }
    if learned.is_empty() {
        return Err(match cx.errors.first() {
            Some(e) if cx.statements.is_empty() => DedupeError::Parse(format!(
                "line {}, column {}: {}",
                e.line, e.column, e.message
            )),
            _ => DedupeError::NothingLearned,
        });
    }
    Ok(learned)
}

fn learn_from(cx: &FileContext, stmt: &Statement, with: Option<&With>) -> Vec<LearnedKey> {
    let mut out = Vec::new();
    let delete_target = match stmt {
        Statement::Delete(d) => delete_target(d),
        _ => None,
    };
    if let Statement::Delete(d) = stmt {
        if let Some(k) = self_join(cx, d) {
            out.push(k);
        }
        if let (Some(target), Some(selection)) = (&delete_target, &d.selection)
            && let Some(k) = not_in_min(cx, target, selection)
        {
            out.push(k);
        }
    }
    // ROW_NUMBER() windows anywhere in the statement.
    let identity = match stmt {
        Statement::Delete(d) => d.selection.as_ref().and_then(in_column),
        _ => None,
    };
    // A `WITH ranked AS (... ROW_NUMBER() ...) DELETE ...` holds its window in the CTE.
    let mut learn = |e: &Expr| {
        if let Some((partition, order)) = row_number_window(e) {
            let table = delete_target
                .as_ref()
                .map(|(name, _)| (*name).clone())
                .or_else(|| source_table(stmt));
            if let Some(name) = &table {
                let natural_key: Vec<String> = partition
                    .iter()
                    .filter_map(super::rules::column_name)
                    .collect();
                if natural_key.len() == partition.len() {
                    out.push(LearnedKey {
                        table: cx.table(name).name,
                        natural_key,
                        survivor: order
                            .first()
                            .and_then(|o| survivor_of_order(o, identity.as_deref())),
                    });
                }
            }
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions(stmt, &mut learn);
    if let Some(with) = with {
        let _ = visit_expressions(with, &mut learn);
    }
    out
}

/// The table a DELETE removes rows from, and the alias it goes by.
fn delete_target(d: &Delete) -> Option<(&ObjectName, Option<String>)> {
    let from = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let tables = table_factors(from);
    if let Some(first) = d.tables.first() {
        // MySQL `DELETE a FROM t a JOIN ...`: `a` names an alias (or the table).
        let wanted = first.to_string();
        return tables.into_iter().find(|(name, alias)| {
            alias.as_deref() == Some(wanted.as_str()) || name.to_string() == wanted
        });
    }
    tables.into_iter().next()
}

/// Every plain table of a FROM list (joins included) with its alias.
fn table_factors<'a>(from: &'a [TableWithJoins]) -> Vec<(&'a ObjectName, Option<String>)> {
    let mut out = Vec::new();
    let push = |f: &'a TableFactor| -> Option<(&'a ObjectName, Option<String>)> {
        if let TableFactor::Table { name, alias, .. } = f {
            Some((name, alias.as_ref().map(|a| a.name.value.clone())))
        } else {
            None
        }
    };
    for t in from {
        if let Some(x) = push(&t.relation) {
            out.push(x);
        }
        for j in &t.joins {
            if let Some(x) = push(&j.relation) {
                out.push(x);
            }
        }
    }
    out
}

/// The first table a statement's query reads (for `CREATE TABLE ... AS SELECT ... ROW_NUMBER()
/// ... FROM t`).
fn source_table(stmt: &Statement) -> Option<ObjectName> {
    let query: &Query = match stmt {
        Statement::CreateTable(c) => c.query.as_deref()?,
        Statement::Insert(i) => i.source.as_deref()?,
        Statement::Query(q) => q,
        _ => return None,
    };
    match visit_relations(query, |name| ControlFlow::Break(name.clone())) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

/// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)`.
fn row_number_window(e: &Expr) -> Option<(&[Expr], &[OrderByExpr])> {
    let Expr::Function(f) = e else {
        return None;
    };
    let name = f.name.to_string().to_ascii_lowercase();
    if name != "row_number" && name != "rank" && name != "dense_rank" {
        return None;
    }
    match &f.over {
        Some(WindowType::WindowSpec(spec)) if !spec.partition_by.is_empty() => {
            Some((&spec.partition_by, &spec.order_by))
        }
        _ => None,
    }
}

fn survivor_of_order(o: &OrderByExpr, identity: Option<&str>) -> Option<SurvivorRule> {
    let column = super::rules::column_name(&o.expr)?;
    let descending = matches!(o.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
    Some(if descending {
        SurvivorRule::Latest(column)
    } else if is_identity(&column, identity) {
        SurvivorRule::LowestSurrogate
    } else {
        SurvivorRule::Earliest(column)
    })
}

/// True for the column that identifies a physical row: the one the job deletes by, or a name
/// that says so.
fn is_identity(column: &str, identity: Option<&str>) -> bool {
    let c = column.to_ascii_lowercase();
    identity.is_some_and(|i| i.eq_ignore_ascii_case(column))
        || ["id", "rowid", "ctid", "surrogate_key"].contains(&c.as_str())
        || c.ends_with("_sk")
}

/// The column of `col IN (...)` / `col NOT IN (...)` in a WHERE.
fn in_column(e: &Expr) -> Option<String> {
    match e {
        Expr::In { expr, .. } => super::rules::column_name(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => in_column(left).or_else(|| in_column(right)),
        Expr::Nested(inner) => in_column(inner),
        _ => None,
    }
}

/// `DELETE FROM t WHERE id NOT IN (SELECT min(id) FROM t GROUP BY key)`, the subquery possibly
/// wrapped in a derived table (MySQL needs that).
fn not_in_min(
    cx: &FileContext,
    target: &(&ObjectName, Option<String>),
    selection: &Expr,
) -> Option<LearnedKey> {
    let Expr::In {
        expr,
        target: InTarget::Subquery(query),
        negated: true,
        ..
    } = selection
    else {
        return match selection {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => not_in_min(cx, target, left).or_else(|| not_in_min(cx, target, right)),
            _ => None,
        };
    };
    let identity = super::rules::column_name(expr);
    let (group_by, aggregate) = grouped_select(query)?;
    let survivor = aggregate.map(|(f, c)| {
        if f == "max" {
            SurvivorRule::Latest(c)
        } else if is_identity(&c, identity.as_deref()) {
            SurvivorRule::LowestSurrogate
        } else {
            SurvivorRule::Earliest(c)
        }
    });
    Some(LearnedKey {
        table: cx.table(target.0).name,
        natural_key: group_by,
        survivor,
    })
}

/// `("min" | "max", column)` of a grouped SELECT.
type Aggregate = (String, String);

/// The GROUP BY columns of the innermost grouped SELECT, and its `min(col)`/`max(col)`.
fn grouped_select(query: &Query) -> Option<(Vec<String>, Option<Aggregate>)> {
    let SetExpr::Select(s) = query.body.as_ref() else {
        return None;
    };
    if let GroupByExpr::Expressions(exprs, _) = &s.group_by
        && !exprs.is_empty()
    {
        let columns: Vec<String> = exprs.iter().filter_map(super::rules::column_name).collect();
        let aggregate = s.projection.iter().find_map(|item| {
            let Expr::Function(f) = super::rules::item_expr(item)? else {
                return None;
            };
            let name = f.name.to_string().to_ascii_lowercase();
            if name != "min" && name != "max" {
                return None;
            }
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            match list.args.first()? {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                    Some((name, super::rules::column_name(e)?))
                }
                _ => None,
            }
        });
        return (columns.len() == exprs.len()).then_some((columns, aggregate));
    }
    s.from.iter().find_map(|t| match &t.relation {
        TableFactor::Derived { subquery, .. } => grouped_select(subquery),
        _ => None,
    })
}

/// A self-join DELETE: two copies of one table, equal on the key, compared on the survivor.
fn self_join(cx: &FileContext, d: &Delete) -> Option<LearnedKey> {
    let (target, target_alias) = delete_target(d)?;
    let target_name = cx.table(target);
    let from = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let mut copies: Vec<String> = Vec::new();
    let mut predicates: Vec<&Expr> = Vec::new();
    let all = from.iter().chain(d.using.iter().flatten());
    for t in all {
        for (name, alias) in table_factors(std::slice::from_ref(t)) {
            if super::rules::same_table(&cx.table(name), &target_name) {
                copies.push(alias.unwrap_or_else(|| name.to_string()));
            }
        }
        for j in &t.joins {
            let constraint = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c) => Some(c),
                _ => None,
            };
            if let Some(JoinConstraint::On(e)) = constraint {
                predicates.push(e);
            }
        }
    }
    if copies.len() < 2 {
        return None;
    }
    let deleted = target_alias.unwrap_or_else(|| target.to_string());
    predicates.extend(d.selection.iter());
    let mut conjuncts = Vec::new();
    for p in predicates {
        conjuncts_of(p, &mut conjuncts);
    }
    let mut key = Vec::new();
    let mut survivor = None;
    for c in conjuncts {
        let Expr::BinaryOp { left, op, right } = c else {
            continue;
        };
        let (Some(lc), Some(rc)) = (
            super::rules::column_name(left),
            super::rules::column_name(right),
        ) else {
            continue;
        };
        if !lc.eq_ignore_ascii_case(&rc) {
            continue;
        }
        let left_is_deleted = super::rules::qualifier(left).is_some_and(|q| q == deleted);
        match op {
            BinaryOperator::Eq => key.push(lc),
            BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                // The deleted copy is the smaller one: the larger survives.
                let deleted_smaller =
                    matches!(op, BinaryOperator::Lt | BinaryOperator::LtEq) == left_is_deleted;
                survivor = Some(if deleted_smaller {
                    SurvivorRule::Latest(lc)
                } else if is_identity(&lc, None) {
                    SurvivorRule::LowestSurrogate
                } else {
                    SurvivorRule::Earliest(lc)
                });
            }
            _ => {}
        }
    }
    (!key.is_empty()).then_some(LearnedKey {
        table: target_name.name,
        natural_key: key,
        survivor,
    })
}

fn conjuncts_of<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts_of(left, out);
            conjuncts_of(right, out);
        }
        Expr::Nested(inner) => conjuncts_of(inner, out),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learn(sql: &str, dialect: Dialect) -> LearnedKey {
        let mut keys = learn_keys(sql, dialect).unwrap_or_else(|e| panic!("{e}\n{sql}"));
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys.remove(0)
    }

    #[test]
    fn row_number_jobs_give_the_partition_and_the_order() {
        let k = learn(
            "DELETE FROM sales.daily_orders WHERE surrogate_key IN (\n\
               SELECT surrogate_key FROM (\n\
                 SELECT surrogate_key, ROW_NUMBER() OVER (\n\
                   PARTITION BY order_id, line_item_id ORDER BY loaded_at DESC) AS rn\n\
                 FROM sales.daily_orders) ranked\n\
               WHERE rn > 1);",
            Dialect::Postgres,
        );
        assert_eq!(k.table.to_string(), "sales.daily_orders");
        assert_eq!(k.natural_key, ["order_id", "line_item_id"]);
        assert_eq!(k.survivor, Some(SurvivorRule::Latest("loaded_at".into())));
    }

    #[test]
    fn create_table_as_with_qualify_is_read_too() {
        let k = learn(
            "CREATE OR REPLACE TABLE analytics.orders_clean AS\n\
             SELECT * FROM analytics.orders\n\
             QUALIFY ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY id) = 1;",
            Dialect::Snowflake,
        );
        assert_eq!(k.table.to_string(), "analytics.orders");
        assert_eq!(k.natural_key, ["order_id"]);
        assert_eq!(k.survivor, Some(SurvivorRule::LowestSurrogate));
    }

    #[test]
    fn self_join_deletes_give_the_matched_columns() {
        let k = learn(
            "DELETE FROM daily_orders a USING daily_orders b\n\
             WHERE a.order_id = b.order_id AND a.line_item_id = b.line_item_id\n\
               AND a.loaded_at < b.loaded_at;",
            Dialect::Postgres,
        );
        assert_eq!(k.natural_key, ["order_id", "line_item_id"]);
        assert_eq!(k.survivor, Some(SurvivorRule::Latest("loaded_at".into())));
        let k = learn(
            "DELETE a FROM daily_orders a JOIN daily_orders b\n\
               ON a.order_id = b.order_id AND a.id > b.id;",
            Dialect::MySql,
        );
        assert_eq!(k.natural_key, ["order_id"]);
        assert_eq!(k.survivor, Some(SurvivorRule::LowestSurrogate));
    }

    #[test]
    fn not_in_min_jobs_give_the_group_by() {
        let k = learn(
            "DELETE FROM daily_orders WHERE id NOT IN (\n\
               SELECT * FROM (SELECT MIN(id) FROM daily_orders GROUP BY order_id, line_item_id) keep);",
            Dialect::MySql,
        );
        assert_eq!(k.natural_key, ["order_id", "line_item_id"]);
        assert_eq!(k.survivor, Some(SurvivorRule::LowestSurrogate));
        let k = learn(
            "DELETE FROM t WHERE id NOT IN (SELECT max(id) FROM t GROUP BY k);",
            Dialect::Sqlite,
        );
        assert_eq!(k.survivor, Some(SurvivorRule::Latest("id".into())));
    }

    #[test]
    fn sql_without_a_dedupe_pattern_is_an_error() {
        let err = learn_keys("SELECT 1;", Dialect::Postgres).expect_err("nothing");
        assert!(err.to_string().contains("no dedupe pattern"), "{err}");
        let err = learn_keys("DELETE FROM WHERE;", Dialect::Postgres).expect_err("bad");
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}
