//! The rules, one file each with its tests beside it. A rule reads a [`FileContext`] and
//! reports [`Hit`]s: a message that teaches what goes wrong on retry, a fix, and the edits of
//! the automatic rewrite when one exists.
//!
//! This file holds what several rules share: reading an INSERT (its target, column list,
//! source rows and conflict handling) and knowing what came before it in the file.

pub mod conflict_on_surrogate;
pub mod dbt_incremental_without_unique_key;
pub mod delta_update;
pub mod external_side_effect;
pub mod insert_without_natural_key;
pub mod null_unsafe_key_match;
pub mod partition_append;
pub mod random_surrogate_in_insert;
pub mod upsert_duplicate_source;

use std::ops::ControlFlow;

use sqlparser::ast::{
    ConflictTarget, Expr, InTarget, Insert, JoinConstraint, JoinOperator, ObjectName, ObjectType,
    OnInsert, Query, Select, SelectItem, SetExpr, SetOperator, SqliteOnConflict, Statement,
    TableObject, visit_expressions, visit_relations,
};

use super::source::{FileContext, Stmt, TableTarget};
use super::{Hit, TableKeys};

/// Every rule: its kebab-case name and a one-line summary (the README's rules table).
pub const RULES: [(&str, &str); 9] = [
    (
        insert_without_natural_key::NAME,
        "INSERT with no conflict handling on the natural key: retries append copies",
    ),
    (
        conflict_on_surrogate::NAME,
        "ON CONFLICT or MERGE on a key generated per insert (never matches) or on part of the natural key",
    ),
    (
        random_surrogate_in_insert::NAME,
        "the task writes a random key (gen_random_uuid(), uuid(), nextval ...)",
    ),
    (
        delta_update::NAME,
        "SET c = c + x: every retry adds x again",
    ),
    (
        upsert_duplicate_source::NAME,
        "an upsert or MERGE whose source may hold the same key twice",
    ),
    (
        null_unsafe_key_match::NAME,
        "a key match with = on nullable key columns: NULL keys never match",
    ),
    (
        partition_append::NAME,
        "INSERT of one day/partition without removing that partition first",
    ),
    (
        dbt_incremental_without_unique_key::NAME,
        "a dbt incremental model without unique_key appends on every run",
    ),
    (
        external_side_effect::NAME,
        "SQL that calls out (HTTP, NOTIFY, dblink, Lambda): a retry calls again",
    ),
];

/// Runs every rule over a file.
pub(crate) fn check_all(cx: &FileContext) -> Vec<Hit> {
    let mut hits = Vec::new();
    insert_without_natural_key::check(cx, &mut hits);
    conflict_on_surrogate::check(cx, &mut hits);
    random_surrogate_in_insert::check(cx, &mut hits);
    delta_update::check(cx, &mut hits);
    upsert_duplicate_source::check(cx, &mut hits);
    null_unsafe_key_match::check(cx, &mut hits);
    partition_append::check(cx, &mut hits);
    dbt_incremental_without_unique_key::check(cx, &mut hits);
    external_side_effect::check(cx, &mut hits);
    hits
}

/// How an INSERT handles a row whose key is already there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Conflict {
    /// Nothing: the row is appended (or the statement fails on a unique key).
    None,
    /// `ON CONFLICT (cols) ...`, with `do_update` for `DO UPDATE`.
    Columns {
        columns: Vec<String>,
        do_update: bool,
    },
    /// Handled without naming columns: `ON CONFLICT ON CONSTRAINT`, `ON CONFLICT DO NOTHING`,
    /// `ON DUPLICATE KEY UPDATE`, `INSERT IGNORE`, `REPLACE INTO`, `INSERT OR REPLACE`.
    Unnamed { do_update: bool },
    /// `INSERT OVERWRITE`: the target (or partition) is replaced.
    Overwrite,
}

/// An INSERT, read for the rules.
pub(crate) struct InsertView<'a> {
    pub stmt: &'a Stmt,
    pub index: usize,
    pub insert: &'a Insert,
    pub name: &'a ObjectName,
    pub target: TableTarget,
    pub keys: Option<&'a TableKeys>,
    /// The explicit column list, as written (unquoted values).
    pub columns: Vec<String>,
    pub conflict: Conflict,
}

impl<'a> InsertView<'a> {
    /// The `SELECT` that produces the rows, when the source is one.
    pub fn select(&self) -> Option<&'a Select> {
        let query = self.insert.source.as_deref()?;
        match query.body.as_ref() {
            SetExpr::Select(s) => Some(s),
            _ => None,
        }
    }

    /// The expressions written into a target column: the select item or every VALUES row's
    /// item at the column's position in the column list.
    pub fn values_for(&self, column: &str) -> Vec<&'a Expr> {
        let Some(position) = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))
        else {
            return Vec::new();
        };
        let Some(query) = self.insert.source.as_deref() else {
            return Vec::new();
        };
        match query.body.as_ref() {
            SetExpr::Select(s) => s
                .projection
                .get(position)
                .and_then(item_expr)
                .into_iter()
                .collect(),
            SetExpr::Values(v) => v
                .rows
                .iter()
                .filter_map(|row| row.content.get(position))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True when the conflict handling names exactly the natural key (in any order).
    pub fn conflicts_on_key(&self) -> bool {
        match (&self.conflict, self.keys) {
            (Conflict::Columns { columns, .. }, Some(k)) if !k.natural_key.is_empty() => {
                same_columns(columns, &k.natural_key)
            }
            _ => false,
        }
    }

    /// The user's spelling of a column when the column list names it, else the column quoted.
    pub fn column_sql(&self, cx: &FileContext, column: &str) -> String {
        self.insert
            .columns
            .iter()
            .find(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| i.value.eq_ignore_ascii_case(column))
            })
            .map(|c| cx.text_of(c).to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| cx.dialect.quote_ident(column))
    }
}

pub(crate) fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// The name a select item produces (its alias, or the column it reads).
pub(crate) fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        SelectItem::UnnamedExpr(e) => column_name(e),
        _ => None,
    }
}

/// The column an expression reads, when it is a plain (possibly qualified) column.
pub(crate) fn column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        Expr::Nested(inner) => column_name(inner),
        _ => None,
    }
}

/// The qualifier of a column reference (`t` in `t.col`).
pub(crate) fn qualifier(e: &Expr) -> Option<String> {
    match e {
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            parts.get(parts.len() - 2).map(|i| i.value.clone())
        }
        Expr::Nested(inner) => qualifier(inner),
        _ => None,
    }
}

pub(crate) fn same_columns(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.eq_ignore_ascii_case(x)))
}

pub(crate) fn same_table(a: &TableTarget, b: &TableTarget) -> bool {
    a.name.name.eq_ignore_ascii_case(&b.name.name)
        && match (&a.name.schema, &b.name.schema) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => true,
        }
}

/// Every INSERT of the file with a plain table as its target.
pub(crate) fn inserts<'a>(cx: &'a FileContext) -> Vec<InsertView<'a>> {
    let mut out = Vec::new();
    for (index, stmt) in cx.statements.iter().enumerate() {
        let Statement::Insert(insert) = &stmt.ast else {
            continue;
        };
        let TableObject::TableName(name) = &insert.table else {
            continue;
        };
        let target = cx.table(name);
        let keys = cx.keys.find(&target);
        let columns = insert
            .columns
            .iter()
            .filter_map(|c| {
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
            })
            .collect();
        let conflict = if insert.overwrite {
            Conflict::Overwrite
        } else if insert.ignore
            || insert.replace_into
            || matches!(
                insert.or,
                Some(SqliteOnConflict::Ignore | SqliteOnConflict::Replace)
            )
        {
            Conflict::Unnamed {
                do_update: insert.replace_into || insert.or == Some(SqliteOnConflict::Replace),
            }
        } else {
            match &insert.on {
                Some(OnInsert::DuplicateKeyUpdate(_)) => Conflict::Unnamed { do_update: true },
                Some(OnInsert::OnConflict(oc)) => {
                    let do_update =
                        matches!(oc.action, sqlparser::ast::OnConflictAction::DoUpdate(_));
                    match &oc.conflict_target {
                        Some(ConflictTarget::Columns { columns, .. }) => Conflict::Columns {
                            columns: columns.iter().map(|i| i.value.clone()).collect(),
                            do_update,
                        },
                        _ => Conflict::Unnamed { do_update },
                    }
                }
                _ => Conflict::None,
            }
        };
        out.push(InsertView {
            stmt,
            index,
            insert,
            name,
            target,
            keys,
            columns,
            conflict,
        });
    }
    out
}

/// What an earlier statement of the file did to a table, making an INSERT into it a
/// replacement rather than an append.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cleared {
    /// `TRUNCATE`, `DELETE` without WHERE, `DROP` + `CREATE`, `CREATE OR REPLACE`, a
    /// temporary table.
    Whole,
    /// `DELETE ... WHERE ...`: a partition (or some rows) removed first.
    Partition { in_transaction: bool },
}

/// Whether a statement before the INSERT removes the rows it loads (or creates the target
/// afresh). A `DELETE ... WHERE` counts only when its predicate covers what the INSERT loads:
/// the INSERT's partition filter (same column, same value or placeholder), or — without one —
/// every natural-key column. Deleting some other rows first replaces nothing.
pub(crate) fn cleared_before(cx: &FileContext, view: &InsertView) -> Option<Cleared> {
    let target = &view.target;
    let mut found = None;
    let mut dropped = false;
    for stmt in &cx.statements[..view.index] {
        match &stmt.ast {
            Statement::Truncate(t)
                if t.table_names
                    .iter()
                    .any(|n| same_table(&cx.table(&n.name), target)) =>
            {
                found = Some(Cleared::Whole);
            }
            Statement::Delete(d) => {
                let tables = match &d.from {
                    sqlparser::ast::FromTable::WithFromKeyword(t)
                    | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
                };
                let hits = tables.iter().any(|t| match &t.relation {
                    sqlparser::ast::TableFactor::Table { name, .. } => {
                        same_table(&cx.table(name), target)
                    }
                    _ => false,
                }) || d.tables.iter().any(|n| same_table(&cx.table(n), target));
                if hits {
                    match &d.selection {
                        None => found = Some(Cleared::Whole),
                        Some(selection) if delete_covers(cx, view, selection) => {
                            found = Some(Cleared::Partition {
                                in_transaction: stmt.in_transaction,
                            })
                        }
                        Some(_) => {}
                    }
                }
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } if names.iter().any(|n| same_table(&cx.table(n), target)) => {
                dropped = true;
            }
            Statement::CreateTable(c)
                if same_table(&cx.table(&c.name), target)
                    && (c.or_replace || c.temporary || dropped) =>
            {
                found = Some(Cleared::Whole);
            }
            _ => {}
        }
    }
    found
}

/// True when a DELETE's predicate covers the rows the INSERT loads (see [`cleared_before`]).
fn delete_covers(cx: &FileContext, view: &InsertView, selection: &Expr) -> bool {
    let Some(filter) = partition_append::partition_filter(cx, view) else {
        return match view.keys.filter(|k| !k.natural_key.is_empty()) {
            Some(keys) => keys
                .natural_key
                .iter()
                .all(|c| mentions_column(selection, c)),
            // Without a key natkey cannot tell; it does not cry wolf.
            None => true,
        };
    };
    let squeeze = |t: &str| t.split_whitespace().collect::<String>();
    let value = squeeze(cx.text_of(filter.value));
    let columns: Vec<&str> = filter
        .target_column
        .iter()
        .map(String::as_str)
        .chain([filter.source_column.as_str()])
        .collect();
    let is_column = |e: &Expr| {
        column_name(e).is_some_and(|c| columns.iter().any(|w| w.eq_ignore_ascii_case(&c)))
    };
    let mut conjuncts = Vec::new();
    partition_append::collect_conjuncts(selection, &mut conjuncts);
    conjuncts.into_iter().any(|e| match e {
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::Eq,
            right,
        } => {
            (is_column(left) && squeeze(cx.text_of(right.as_ref())) == value)
                || (is_column(right) && squeeze(cx.text_of(left.as_ref())) == value)
        }
        _ => false,
    })
}

/// True when an expression reads a column of that name (any qualifier).
pub(crate) fn mentions_column(e: &Expr, column: &str) -> bool {
    visit_expressions(e, |x| match column_name(x) {
        Some(c) if c.eq_ignore_ascii_case(column) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// True when the INSERT skips rows already loaded with an anti-join on the target's natural
/// key: `WHERE NOT EXISTS (SELECT ... FROM target WHERE <every key column matched>)`, `(key)
/// NOT IN (SELECT key FROM target)`, `LEFT JOIN target ON <key> ... WHERE ... IS NULL`, or
/// `EXCEPT SELECT ... FROM target`. Merely reading the target guards nothing. When the key is
/// unknown, any of these shapes on the target counts.
pub(crate) fn anti_join_on_key(cx: &FileContext, view: &InsertView) -> bool {
    let Some(query) = view.insert.source.as_deref() else {
        return false;
    };
    let key: Vec<String> = view.keys.map(|k| k.natural_key.clone()).unwrap_or_default();
    let covers = |e: &Expr| key.iter().all(|c| mentions_column(e, c));
    let reads = |q: &Query| reads_target(cx, q, &view.target);
    let in_expressions = visit_expressions(query, |e| {
        let guard = match e {
            Expr::Exists {
                subquery,
                negated: true,
            } => {
                reads(subquery)
                    && match subquery.body.as_ref() {
                        SetExpr::Select(s) => {
                            key.is_empty() || s.selection.as_ref().is_some_and(covers)
                        }
                        _ => false,
                    }
            }
            Expr::In {
                expr,
                target: InTarget::Subquery(subquery),
                negated: true,
                ..
            } => reads(subquery) && covers(expr),
            _ => false,
        };
        if guard {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break();
    in_expressions || left_anti_join(cx, query.body.as_ref(), view, &covers)
}

fn left_anti_join(
    cx: &FileContext,
    body: &SetExpr,
    view: &InsertView,
    covers: &dyn Fn(&Expr) -> bool,
) -> bool {
    match body {
        SetExpr::Select(s) => {
            let checks_null = s.selection.as_ref().is_some_and(|w| {
                visit_expressions(w, |x| {
                    if matches!(x, Expr::IsNull(_)) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .is_break()
            });
            s.from.iter().flat_map(|t| &t.joins).any(|j| {
                let on_target = matches!(&j.relation, sqlparser::ast::TableFactor::Table { name, .. }
                    if same_table(&cx.table(name), &view.target));
                let constraint = match &j.join_operator {
                    JoinOperator::Left(c) | JoinOperator::LeftOuter(c) if checks_null => Some(c),
                    JoinOperator::LeftAnti(c) | JoinOperator::Anti(c) => Some(c),
                    _ => None,
                };
                on_target
                    && match constraint {
                        Some(JoinConstraint::On(on)) => covers(on),
                        Some(JoinConstraint::Using(_)) => true,
                        _ => false,
                    }
            })
        }
        SetExpr::SetOperation {
            op: SetOperator::Except,
            left,
            right,
            ..
        } => {
            visit_relations(right.as_ref(), |name| {
                if same_table(&cx.table(name), &view.target) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .is_break()
                || left_anti_join(cx, left, view, covers)
        }
        SetExpr::Query(q) => left_anti_join(cx, q.body.as_ref(), view, covers),
        _ => false,
    }
}

/// True when the query reads the target table itself.
pub(crate) fn reads_target(cx: &FileContext, query: &Query, target: &TableTarget) -> bool {
    visit_relations(query, |name| {
        if same_table(&cx.table(name), target) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// "the natural key of X is not known" in one place, so every rule says it the same way.
pub(crate) fn unknown_key(target: &TableTarget) -> String {
    format!(
        "natkey does not know the natural key of {target}: pass --natural-key {target}=col1,col2, \
         add a [[table]] entry to natkey.toml, or use --warehouse"
    )
}

/// `(a, b)` with each name quoted for the dialect.
pub(crate) fn column_list(cx: &FileContext, columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| cx.dialect.quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use crate::rewrite::test_support::*;

    #[test]
    fn a_write_behind_a_with_clause_is_checked_like_any_other() {
        // sqlparser reads these as queries whose body is the DML: the rules must see it.
        let report = run(
            "WITH src AS (SELECT order_id, line_item_id FROM staging.orders)\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT order_id, line_item_id FROM src;",
        );
        assert_eq!(rules_of(&report), ["insert-without-natural-key"]);
        let text = rewritten(&report);
        assert!(
            text.ends_with(
                "SELECT order_id, line_item_id FROM src ON CONFLICT (\"order_id\", \"line_item_id\") DO NOTHING;"
            ),
            "{text}"
        );

        let report = run(
            "WITH n AS (SELECT day, count(*) AS c FROM s GROUP BY day)\n\
             UPDATE daily_totals t SET total = t.total + n.c FROM n WHERE t.day = n.day;",
        );
        assert_eq!(rules_of(&report), ["delta-update"]);

        let report = run("WITH src AS (SELECT day, total FROM s)\n\
             MERGE INTO daily_totals t USING src ON t.day IS NOT DISTINCT FROM src.day\n\
             WHEN MATCHED THEN UPDATE SET total = src.total;");
        assert_eq!(rules_of(&report), ["upsert-duplicate-source"]);

        let targets = crate::rewrite::write_targets(
            "WITH s AS (SELECT 1 AS a) INSERT INTO x.t (a) SELECT a FROM s",
            crate::rewrite::Dialect::Postgres,
        );
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].to_string(), "x.t");
    }

    #[test]
    fn a_write_inside_a_with_clause_is_reported_and_left_to_the_user() {
        let report = run("WITH ins AS (\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT order_id, line_item_id FROM staging.orders RETURNING order_id)\n\
             SELECT count(*) FROM ins;");
        assert_eq!(
            rules_of(&report),
            ["insert-without-natural-key"],
            "{report:#?}"
        );
        assert_eq!(report.findings[0].line, 2);
        let report = run("WITH ins AS (\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id, order_date)\n\
             SELECT order_id, line_item_id, order_date FROM staging.orders\n\
             WHERE order_date = '{{ ds }}')\n\
             SELECT 1;");
        assert_eq!(rules_of(&report), ["partition-append"], "{report:#?}");
        assert_eq!(report.rewritten, None);
        assert!(report.findings[0].fix.contains("by hand"), "{report:#?}");
        // A partition replaced in the same statement is fine.
        let report = run(
            "WITH gone AS (DELETE FROM sales.daily_orders WHERE order_date = '{{ ds }}')\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id, order_date)\n\
             SELECT order_id, line_item_id, order_date FROM staging.orders\n\
             WHERE order_date = '{{ ds }}';",
        );
        assert!(report.idempotent, "{report:#?}");
    }

    #[test]
    fn a_with_clause_that_deduplicates_or_replaces_is_fine() {
        for sql in [
            "WITH src AS (SELECT DISTINCT day, total FROM s)\n\
             INSERT INTO daily_totals (day, total) SELECT day, total FROM src\n\
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;",
            "WITH src AS (SELECT day, sum(total) AS total FROM s GROUP BY day)\n\
             MERGE INTO daily_totals t USING src ON t.day IS NOT DISTINCT FROM src.day\n\
             WHEN MATCHED THEN UPDATE SET total = src.total;",
            "WITH src AS (SELECT order_id, line_item_id FROM staging.orders)\n\
             INSERT INTO sales.daily_orders (order_id, line_item_id)\n\
             SELECT order_id, line_item_id FROM src ON CONFLICT (order_id, line_item_id) DO NOTHING;",
        ] {
            let report = run(sql);
            assert!(report.idempotent, "{sql}\n{report:#?}");
        }
    }
}
