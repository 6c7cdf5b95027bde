//! PostgreSQL: lock-safe, rerunnable enforcement with `CREATE UNIQUE INDEX CONCURRENTLY` and
//! `ADD CONSTRAINT ... USING INDEX`; rows addressed by `(tableoid, ctid)`, which also holds
//! across the partitions of a partitioned table.

use super::{DialectPlan, PlanInput, Table};

pub(super) fn plan(t: &Table, input: &PlanInput) -> DialectPlan {
    let version: u32 = if input.audited_dialect == crate::dialect::Dialect::Postgres {
        input.server_version.parse().unwrap_or(150000)
    } else {
        150000
    };
    let nulls_not_distinct = version >= 150000;
    let schema_literal = literal(&t.report.schema);
    let index = t.q(&t.constraint);
    let qualified_index = format!("{}.{index}", t.q(&t.report.schema));
    let mut notes = vec![
        String::new(),
        "Run with psql (each statement on its own: CREATE INDEX CONCURRENTLY cannot run inside a"
            .into(),
        "transaction block), e.g. psql -v ON_ERROR_STOP=1 -f plan.sql.".into(),
    ];

    let mut backup = vec![
        "SET lock_timeout = '5s'".to_string(),
        "SET statement_timeout = '1h'".to_string(),
    ];
    if let Some(schema) = &t.backup_schema {
        backup.push(format!("CREATE SCHEMA IF NOT EXISTS {}", t.q(schema)));
    }
    let columns = t.column_list("");
    backup.push(format!(
        "CREATE TABLE IF NOT EXISTS {} AS SELECT {columns} FROM {} WITH NO DATA",
        t.backup, t.qualified
    ));

    let tiebreak = vec!["ctid".to_string()];
    let cleanup = vec![
        "BEGIN".to_string(),
        // Blocks concurrent writes (not reads) for the cleanup; lock_timeout makes a busy table
        // fail fast instead of queueing every other query behind this one.
        format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", t.qualified),
        format!(
            "CREATE TEMPORARY TABLE natkey_losers ON COMMIT DROP AS\n\
             SELECT natkey_ranked.natkey_tableoid, natkey_ranked.natkey_ctid\n\
             FROM (SELECT tableoid AS natkey_tableoid, ctid AS natkey_ctid,\n\
             {rn} AS natkey_rn\n\
             FROM {table}) natkey_ranked\n\
             WHERE natkey_ranked.natkey_rn > 1",
            rn = t.row_number(&tiebreak),
            table = t.qualified
        ),
        format!(
            "INSERT INTO {backup} ({columns})\nSELECT {columns} FROM {table}\n\
             WHERE (tableoid, ctid) IN (SELECT natkey_tableoid, natkey_ctid FROM pg_temp.natkey_losers)",
            backup = t.backup,
            table = t.qualified
        ),
        format!(
            "DELETE FROM {table}\n\
             WHERE (tableoid, ctid) IN (SELECT natkey_tableoid, natkey_ctid FROM pg_temp.natkey_losers)",
            table = t.qualified
        ),
        "COMMIT".to_string(),
    ];
    let cleanup_why = vec![
        "Keeps one row per natural key (row 1 by the survivor rule) and moves every other row to"
            .into(),
        "the backup, in one transaction: nothing is deleted that was not copied first.".into(),
    ];

    let mut enforce = Vec::new();
    let mut enforce_why = Vec::new();
    let key = t.key_list("");
    if t.report.partitioned {
        let extra: Vec<&String> = t
            .report
            .partition_key
            .iter()
            .filter(|c| !t.key.columns.contains(c))
            .collect();
        notes.push(
            "The table is partitioned: PostgreSQL builds its unique index non-concurrently".into(),
        );
        notes.push(
            "(a short write lock per partition), and a unique key must include the partition key."
                .into(),
        );
        if !extra.is_empty() {
            notes.push(format!(
                "The constraint is on the natural key plus the partition key ({}): it rejects a",
                extra
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            notes.push(
                "second copy within a partition (every retried copy: it carries the same values)"
                    .into(),
            );
            notes.push(
                "but not the same key in two partitions; the verify query and a scheduled audit"
                    .into(),
            );
            notes.push("check the natural key alone.".into());
        }
        enforce_why.push("A unique constraint on the natural key, added only if missing.".into());
        enforce.push(do_block(&format!(
            "IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {name} \
             AND conrelid = {rel}::regclass) THEN\n    \
             ALTER TABLE {table} ADD CONSTRAINT {index} UNIQUE{nnd} ({key}{extra});\n  END IF;",
            name = literal(&t.constraint),
            rel = literal(&t.qualified),
            table = t.qualified,
            nnd = if nulls_not_distinct && !t.nullable_key.is_empty() {
                " NULLS NOT DISTINCT"
            } else {
                ""
            },
            extra = extra
                .iter()
                .map(|c| format!(", {}", t.q(c)))
                .collect::<String>(),
        )));
    } else {
        enforce_why.push(
            "Builds the unique index without blocking writes (CONCURRENTLY), after dropping an"
                .into(),
        );
        enforce_why.push(
            "INVALID leftover of an interrupted earlier run, then turns it into a constraint."
                .into(),
        );
        if !t.nullable_key.is_empty() && !nulls_not_distinct {
            enforce_why.push("PostgreSQL before 15 lets rows with a NULL key repeat under UNIQUE: the key columns".into());
            enforce_why.push(
                "are set NOT NULL first (preflight counts rows with a NULL key; fix them before)."
                    .into(),
            );
            for c in &t.nullable_key {
                let check = t.q(&super::object_name(
                    &[&t.report.name, &c.name, "not_null"],
                    63,
                ));
                enforce.push(format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL) NOT VALID",
                    table = t.qualified,
                    col = t.q(&c.name)
                ));
                enforce.push(format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {check}",
                    t.qualified
                ));
                enforce.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                    t.qualified,
                    t.q(&c.name)
                ));
                enforce.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {check}",
                    t.qualified
                ));
            }
        } else if !t.nullable_key.is_empty() {
            enforce_why.push(
                "Key columns may be NULL: NULLS NOT DISTINCT makes two NULL keys the same key, as"
                    .into(),
            );
            enforce_why.push(
                "GROUP BY (and the audit) count them; a plain UNIQUE would let them repeat.".into(),
            );
        }
        enforce.push(do_block(&format!(
            "IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = {schema_literal} AND c.relname = {name} AND NOT i.indisvalid) THEN\n    \
             DROP INDEX {qualified_index};\n  END IF;",
            name = literal(&t.constraint),
        )));
        enforce.push(format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} ({key}){nnd}",
            table = t.qualified,
            nnd = if nulls_not_distinct && !t.nullable_key.is_empty() {
                " NULLS NOT DISTINCT"
            } else {
                ""
            },
        ));
        enforce.push(do_block(&format!(
            "IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {name} \
             AND conrelid = {rel}::regclass) THEN\n    \
             ALTER TABLE {table} ADD CONSTRAINT {index} UNIQUE USING INDEX {index};\n  END IF;",
            name = literal(&t.constraint),
            rel = literal(&t.qualified),
            table = t.qualified,
        )));
    }

    let cols: Vec<String> = t.payload().iter().map(|c| t.q(&c.name)).collect();
    let conflict = t.on_conflict_action("EXCLUDED");
    let load = vec![format!(
        "INSERT INTO {table} ({cols})\nSELECT {cols} FROM {staging}\nON CONFLICT ({key}) {conflict}",
        table = t.qualified,
        cols = cols.join(", "),
        staging = t.staging(),
    )];
    let load_why = load_why(t);

    let mut rollback = vec![
        "SET lock_timeout = '5s'".to_string(),
        format!(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {index}",
            t.qualified
        ),
    ];
    if !t.report.partitioned {
        rollback.push(format!("DROP INDEX IF EXISTS {qualified_index}"));
    }
    if t.has_duplicates {
        let columns = t.column_list("");
        rollback.push("BEGIN".into());
        rollback.push(format!(
            "INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE\nSELECT {columns} FROM {backup}",
            table = t.qualified,
            backup = t.backup
        ));
        rollback.push(format!("DELETE FROM {}", t.backup));
        rollback.push("COMMIT".into());
    }
    DialectPlan {
        notes,
        prepare: Vec::new(),
        backup,
        cleanup,
        cleanup_why,
        enforce,
        enforce_why,
        load,
        load_why,
        rollback,
    }
}

pub(super) fn load_why(t: &Table) -> Vec<String> {
    let mut why = if t.mutable {
        vec![
            "Mutable facts: a retry updates the row to the values of the source (target state"
                .into(),
            "asserted), never adds a copy. Replace the staging relation with your task's source."
                .into(),
        ]
    } else {
        vec![
            "Append-only facts: a retry finds every row already there and inserts nothing.".into(),
            "Replace the staging relation with your task's source.".into(),
        ]
    };
    if !t.report.surrogate_key.is_empty() {
        why.push(format!(
            "The surrogate key ({}) is left to the database; if the task writes it, derive it from",
            t.report.surrogate_key.join(", ")
        ));
        why.push("the natural key (a hash) instead of gen_random_uuid().".into());
    }
    why
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A `DO` block; dollar-quoted with a tag no identifier can close.
fn do_block(body: &str) -> String {
    let mut tag = "natkey".to_string();
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("DO ${tag}$\nBEGIN\n  {body}\nEND\n${tag}$")
}
