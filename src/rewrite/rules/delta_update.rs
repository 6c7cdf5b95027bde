//! `delta-update`: `SET c = c + x` (or `- x`, `|| x`), in an UPDATE or in an upsert's update
//! (`ON CONFLICT DO UPDATE`, `ON DUPLICATE KEY UPDATE`, MERGE `WHEN MATCHED`). Each retry
//! applies the delta again. Inside an upsert the source row already holds the value, so the
//! rewrite assigns it; a plain UPDATE cannot be rewritten without knowing the source, so the
//! fix gives the shape to follow instead.

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, MergeAction, MergeUpdateKind, ObjectName, OnConflictAction, OnInsert,
    Statement, TableFactor, TableObject,
};

use super::{FileContext, Hit};
use crate::rewrite::edit::Edit;

pub const NAME: &str = "delta-update";

/// Where the assignment lives, which decides whether it can be rewritten.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Update,
    Upsert,
}

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    for stmt in &cx.statements {
        match &stmt.ast {
            Statement::Update(u) => {
                let target = factor_names(&u.table.relation);
                for a in &u.assignments {
                    check_assignment(cx, a, Place::Update, &target, out);
                }
            }
            Statement::Insert(i) => {
                let assignments = match &i.on {
                    Some(OnInsert::OnConflict(oc)) => match &oc.action {
                        OnConflictAction::DoUpdate(d) => &d.assignments,
                        OnConflictAction::DoNothing => continue,
                    },
                    Some(OnInsert::DuplicateKeyUpdate(a)) => a,
                    _ => continue,
                };
                let mut target: Vec<String> = i
                    .table_alias
                    .iter()
                    .map(|a| a.alias.value.clone())
                    .collect();
                if let TableObject::TableName(name) = &i.table {
                    target.extend(last_part(name));
                }
                for a in assignments {
                    check_assignment(cx, a, Place::Upsert, &target, out);
                }
            }
            Statement::Merge(m) => {
                let target = factor_names(&m.table);
                for clause in &m.clauses {
                    if let MergeAction::Update(u) = &clause.action
                        && let MergeUpdateKind::Set(assignments) = &u.kind
                    {
                        for a in assignments {
                            check_assignment(cx, a, Place::Upsert, &target, out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The names a table factor goes by in column qualifiers: its alias and its own name.
fn factor_names(f: &TableFactor) -> Vec<String> {
    match f {
        TableFactor::Table { name, alias, .. } => alias
            .iter()
            .map(|a| a.name.value.clone())
            .chain(last_part(name))
            .collect(),
        _ => Vec::new(),
    }
}

fn last_part(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
}

fn check_assignment(
    cx: &FileContext,
    a: &Assignment,
    place: Place,
    // The names the target goes by: `t.col` with another qualifier reads another table.
    target: &[String],
    out: &mut Vec<Hit>,
) {
    let AssignmentTarget::ColumnName(name) = &a.target else {
        return;
    };
    let Some(column) = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
    else {
        return;
    };
    let Expr::BinaryOp { left, op, right } = &a.value else {
        return;
    };
    if !matches!(
        op,
        BinaryOperator::Plus | BinaryOperator::Minus | BinaryOperator::StringConcat
    ) {
        return;
    }
    let is_self = |e: &Expr| {
        reads_column(e, &column)
            && super::qualifier(e).is_none_or(|q| target.iter().any(|t| t.eq_ignore_ascii_case(&q)))
    };
    let value = cx.extent(&a.value);
    // `c + a + b` is `(c + a) + b`: follow a chain of the same operator down its left side to
    // find the column itself, and take everything after `c +` as the delta.
    let mut spine: Vec<&Expr> = Vec::new();
    let mut leftmost = &a.value;
    while let Expr::BinaryOp {
        left: l,
        op: o,
        right: r,
    } = leftmost
    {
        if o != op || *o == BinaryOperator::Minus {
            break;
        }
        spine.push(r.as_ref());
        leftmost = l.as_ref();
    }
    let delta: &str = if spine.len() >= 2 && is_self(leftmost) {
        let start = spine
            .last()
            .map(|r| cx.extent(*r).start)
            .unwrap_or(value.end);
        cx.text.get(start..value.end).unwrap_or("")
    } else if is_self(left) {
        cx.text_of(right.as_ref())
    } else if is_self(right) && *op != BinaryOperator::Minus {
        cx.text_of(left.as_ref())
    } else {
        return;
    };
    if delta.is_empty() {
        return;
    }
    let at = cx.extent(a).start;
    let message = format!(
        "SET {column} = {} applies a change instead of asserting a value: every retry adds \
         {delta} again.",
        cx.text.get(value.clone()).unwrap_or("")
    );
    if place == Place::Upsert && *op != BinaryOperator::Minus && !value.is_empty() {
        out.push(Hit {
            rule: NAME,
            at,
            message,
            fix: format!(
                "Assign the value the source computes (SET {column} = {delta}), so a retry \
                 writes the same total; if the source holds increments, aggregate them into the \
                 full value in the source query."
            ),
            edits: vec![Edit::replace(value, delta)],
        });
    } else {
        out.push(Hit {
            rule: NAME,
            at,
            message,
            fix: format!(
                "natkey cannot rewrite this without knowing where {delta} comes from. Compute \
                 the value from source state instead: UPDATE target SET {column} = (SELECT \
                 <aggregate> FROM <source> WHERE <source key> = target.<key>), or upsert the \
                 aggregated value (INSERT ... ON CONFLICT (key) DO UPDATE SET {column} = \
                 EXCLUDED.{column})."
            ),
            edits: Vec::new(),
        });
    }
}

/// `col`, `t.col`, or `COALESCE(col, ...)`.
fn reads_column(e: &Expr, column: &str) -> bool {
    if super::column_name(e).is_some_and(|c| c.eq_ignore_ascii_case(column)) {
        return true;
    }
    if let Expr::Function(f) = e {
        let is_coalesce = f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
            i.value.eq_ignore_ascii_case("coalesce") || i.value.eq_ignore_ascii_case("ifnull")
        });
        if let (true, FunctionArguments::List(list)) = (is_coalesce, &f.args)
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = list.args.first()
        {
            return reads_column(first, column);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use crate::rewrite::Dialect;
    use crate::rewrite::test_support::*;

    #[test]
    fn the_same_column_of_another_table_is_not_a_delta() {
        let report =
            run("UPDATE daily_totals t SET total = s.total + 1 FROM s WHERE t.day = s.day;");
        assert!(!rules_of(&report).contains(&super::NAME), "{report:#?}");
        let report = run("UPDATE daily_totals t SET total = daily_totals.total + 1;");
        assert_eq!(rules_of(&report), [super::NAME], "{report:#?}");
    }

    #[test]
    fn a_chain_of_additions_to_the_column_is_a_delta_too() {
        // Found by the fuzzer: `c + a + b` is `(c + a) + b`.
        let report = run("INSERT INTO daily_totals AS t (day, total)\n\
             SELECT day, sum(amount), sum(fee) FROM s GROUP BY day\n\
             ON CONFLICT (day) DO UPDATE SET total = t.total + excluded.total + excluded.fee;");
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = rewritten(&report);
        assert!(
            text.contains("SET total = excluded.total + excluded.fee;"),
            "{text}"
        );
    }

    #[test]
    fn a_delta_in_an_upsert_is_rewritten_to_the_source_value() {
        let report = run("INSERT INTO daily_totals AS t (day, total)\n\
             SELECT day, sum(amount) FROM s GROUP BY day\n\
             ON CONFLICT (day) DO UPDATE SET total = t.total + excluded.total;");
        assert_eq!(rules_of(&report), [super::NAME]);
        let text = rewritten(&report);
        assert!(
            text.ends_with("DO UPDATE SET total = excluded.total;"),
            "{text}"
        );
    }

    #[test]
    fn a_delta_in_a_merge_is_rewritten() {
        let report = run_in(
            "MERGE INTO daily_totals t USING (SELECT day, sum(amount) AS total FROM s GROUP BY day) src\n\
             ON t.day = src.day\n\
             WHEN MATCHED THEN UPDATE SET total = coalesce(t.total, 0) + src.total\n\
             WHEN NOT MATCHED THEN INSERT (day, total) VALUES (src.day, src.total);",
            Dialect::Snowflake,
        );
        assert!(rules_of(&report).contains(&super::NAME), "{report:#?}");
        let text = rewritten(&report);
        assert!(text.contains("UPDATE SET total = src.total\n"), "{text}");
    }

    #[test]
    fn a_plain_update_delta_gets_the_shape_and_no_rewrite() {
        let report = run("UPDATE counters SET hits = hits + 1 WHERE page = 'home';");
        assert_eq!(rules_of(&report), [super::NAME]);
        assert!(
            report.findings[0].fix.contains("cannot rewrite"),
            "{report:#?}"
        );
        assert_eq!(report.rewritten, None);
        let report = run("UPDATE accounts SET note = note || ' retried';");
        assert_eq!(rules_of(&report), [super::NAME]);
    }

    #[test]
    fn values_computed_from_source_are_fine() {
        for sql in [
            "UPDATE counters c SET hits = (SELECT count(*) FROM hits h WHERE h.page = c.page);",
            "INSERT INTO daily_totals (day, total) SELECT day, sum(a) FROM s GROUP BY day \
             ON CONFLICT (day) DO UPDATE SET total = excluded.total;",
            "UPDATE t SET total = excluded_total + 1;",
        ] {
            assert!(run(sql).idempotent, "{sql}\n{:#?}", run(sql));
        }
    }
}
