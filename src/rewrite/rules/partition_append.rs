//! `partition-append`: an INSERT of one day or partition (`WHERE dt = '{{ ds }}'`) that does
//! not remove that partition first. A retry appends the day a second time. The rewrite deletes
//! the partition and inserts it in one transaction.

use sqlparser::ast::{BinaryOperator, Expr, Value};

use super::{Conflict, FileContext, Hit, InsertView, cleared_before};
use crate::rewrite::edit::Edit;

pub const NAME: &str = "partition-append";

/// `col = value` in an INSERT's source filter that selects one partition.
pub(crate) struct PartitionFilter<'a> {
    pub value: &'a Expr,
    /// The source column compared (as written, last part).
    pub source_column: String,
    /// The target column it lands in, when the column list (or the select item's name) says.
    pub target_column: Option<String>,
}

pub(crate) fn partition_filter<'a>(
    cx: &FileContext,
    view: &InsertView<'a>,
) -> Option<PartitionFilter<'a>> {
    let select = view.select()?;
    let mut conjuncts = Vec::new();
    collect_conjuncts(select.selection.as_ref()?, &mut conjuncts);
    for e in conjuncts {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = e
        else {
            continue;
        };
        let (column, value) = match (super::column_name(left), super::column_name(right)) {
            (Some(c), _) if is_fixed_value(cx, right) => (c, right.as_ref()),
            (_, Some(c)) if is_fixed_value(cx, left) => (c, left.as_ref()),
            _ => continue,
        };
        let value_text = cx.text_of(value);
        if !(says_partition(&column) || value_text.contains("{{") || looks_like_date(value_text)) {
            continue;
        }
        let position = select.projection.iter().position(|item| {
            super::item_name(item).is_some_and(|n| n.eq_ignore_ascii_case(&column))
                || super::item_expr(item)
                    .and_then(super::column_name)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&column))
        });
        let target_column = position.and_then(|p| {
            if view.columns.is_empty() {
                select.projection.get(p).and_then(super::item_name)
            } else {
                view.columns.get(p).cloned()
            }
        });
        return Some(PartitionFilter {
            value,
            source_column: column,
            target_column,
        });
    }
    None
}

pub(crate) fn collect_conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            collect_conjuncts(left, out);
            collect_conjuncts(right, out);
        }
        Expr::Nested(inner) => collect_conjuncts(inner, out),
        other => out.push(other),
    }
}

/// A literal, a typed literal (`DATE '...'`), a Jinja value, or a cast of one.
fn is_fixed_value(cx: &FileContext, e: &Expr) -> bool {
    match e {
        Expr::Value(v) => !matches!(v.value, Value::Null),
        Expr::TypedString { .. } => true,
        Expr::Cast { expr, .. } => is_fixed_value(cx, expr),
        Expr::Nested(inner) => is_fixed_value(cx, inner),
        Expr::Identifier(_) => cx.text_of(e).starts_with("{{"),
        _ => false,
    }
}

fn says_partition(column: &str) -> bool {
    let c = column.to_ascii_lowercase();
    [
        "dt",
        "ds",
        "day",
        "date",
        "partition_date",
        "batch_date",
        "load_date",
    ]
    .contains(&c.as_str())
        || c.ends_with("_date")
        || c.ends_with("_day")
        || c.ends_with("_dt")
        || c.starts_with("partition")
}

fn looks_like_date(text: &str) -> bool {
    let digits: Vec<char> = text
        .trim_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take(10)
        .collect();
    digits.len() == 10
        && digits.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for view in super::inserts(cx) {
        if view.conflict != Conflict::None
            || cleared_before(cx, &view).is_some()
            || super::anti_join_on_key(cx, &view)
        {
            continue;
        }
        let Some(filter) = partition_filter(cx, &view) else {
            continue;
        };
        let value = cx.text_of(filter.value);
        let target = cx.text_of(view.name);
        let message = format!(
            "This INSERT loads one partition ({} = {value}) of {} without removing it first: \
             a retry appends the whole partition again and every SUM over it doubles.",
            filter.source_column, view.target
        );
        let transaction = if view.stmt.in_transaction {
            Some(("", ""))
        } else {
            crate::rewrite::transaction_words(cx.dialect)
        };
        let (Some(column), Some((begin, commit))) = (&filter.target_column, transaction) else {
            out.push(Hit {
                rule: NAME,
                at: view.stmt.range.start,
                message,
                fix: format!(
                    "Replace the partition instead of appending to it: {} (natkey could not \
                     tell which column of {} holds the partition{}).",
                    match crate::rewrite::transaction_words(cx.dialect) {
                        Some((b, c)) => format!(
                            "{b} DELETE FROM {target} WHERE <partition column> = {value}; this \
                             INSERT; {c}"
                        ),
                        None => format!(
                            "INSERT INTO {target} REPLACE WHERE <partition column> = {value} \
                             SELECT ..., or INSERT OVERWRITE {target} PARTITION (<partition \
                             column> = {value})"
                        ),
                    },
                    view.target,
                    if filter.target_column.is_none() {
                        "; name the target columns in the INSERT"
                    } else {
                        ""
                    }
                ),
                edits: Vec::new(),
            });
            continue;
        };
        let column_sql = view.column_sql(cx, column);
        let indent = indent_before(cx.text, view.stmt.range.start);
        let mut before = String::new();
        if !begin.is_empty() {
            before.push_str(begin);
            before.push('\n');
            before.push_str(&indent);
        }
        before.push_str(&format!(
            "DELETE FROM {target} WHERE {column_sql} = {value};\n{indent}"
        ));
        let mut edits = vec![Edit::insert(view.stmt.range.start, before)];
        if !commit.is_empty() {
            edits.push(match view.stmt.semicolon {
                Some(semi) => Edit::insert(semi + 1, format!("\n{indent}{commit}")),
                None => Edit::insert(view.stmt.range.end, format!(";\n{indent}{commit}")),
            });
        }
        out.push(Hit {
            rule: NAME,
            at: view.stmt.range.start,
            message,
            fix: format!(
                "Delete the partition ({column_sql} = {value}) and insert it in one \
                 transaction, so that any number of runs leaves exactly one copy and readers \
                 never see the partition half-loaded."
            ),
            edits,
        });
    }
}

/// The whitespace between the start of the line and `at`, when only whitespace precedes it.
pub(crate) fn indent_before(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0);
    let prefix = &text[line_start..at];
    if prefix.chars().all(|c| c == ' ' || c == '\t') {
        prefix.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    const DAILY: &str = "INSERT INTO sales.daily_orders (order_id, line_item_id, order_date)\n\
        SELECT o.order_id, o.line_item_id, o.order_date\n\
        FROM staging.orders o\n\
        WHERE o.order_date = '{{ ds }}';  -- one day per run\n";

    #[test]
    fn a_daily_append_becomes_delete_then_insert_in_one_transaction() {
        let report = run(DAILY);
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = rewritten(&report);
        insta::assert_snapshot!(text, @r"
        BEGIN;
        DELETE FROM sales.daily_orders WHERE order_date = '{{ ds }}';
        INSERT INTO sales.daily_orders (order_id, line_item_id, order_date)
        SELECT o.order_id, o.line_item_id, o.order_date
        FROM staging.orders o
        WHERE o.order_date = '{{ ds }}';
        COMMIT;  -- one day per run
        ");
    }

    #[test]
    fn inside_an_open_transaction_only_the_delete_is_added() {
        let report = run(&format!("START TRANSACTION;\n{DAILY}COMMIT;\n"));
        let text = rewritten(&report);
        assert_eq!(text.matches("COMMIT").count(), 1, "{text}");
        assert!(
            text.contains("DELETE FROM sales.daily_orders WHERE order_date"),
            "{text}"
        );
    }

    #[test]
    fn mysql_and_bigquery_use_their_transaction_words() {
        assert!(rewritten(&run_in(DAILY, Dialect::MySql)).starts_with("START TRANSACTION;"));
        assert!(rewritten(&run_in(DAILY, Dialect::BigQuery)).contains("COMMIT TRANSACTION;"));
    }

    #[test]
    fn databricks_gets_the_replace_where_shape_without_a_rewrite() {
        let report = run_in(DAILY, Dialect::Databricks);
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(
            report.findings[0].fix.contains("REPLACE WHERE"),
            "{report:#?}"
        );
        assert_eq!(report.rewritten, None);
    }

    #[test]
    fn a_partition_deleted_first_or_a_non_partition_filter_is_not_reported() {
        let report = run(&format!(
            "DELETE FROM sales.daily_orders WHERE order_date = '{{{{ ds }}}}';\n{DAILY}"
        ));
        assert!(report.idempotent, "{report:#?}");
        let report = run("INSERT INTO sales.daily_orders (order_id, line_item_id) \
                          SELECT order_id, line_item_id FROM s WHERE status = 'open' \
                          ON CONFLICT (order_id, line_item_id) DO NOTHING;");
        assert!(report.idempotent, "{report:#?}");
    }
}
