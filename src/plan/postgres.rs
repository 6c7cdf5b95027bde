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

    let session = vec![
        "SET lock_timeout = '5s'".to_string(),
        "SET statement_timeout = '1h'".to_string(),
    ];
    let mut backup = Vec::new();
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
    let nnd = if nulls_not_distinct && !t.nullable_key.is_empty() {
        " NULLS NOT DISTINCT"
    } else {
        ""
    };
    // The unique key: the natural key, NULL-safe, plus (partitioned) the partition key.
    let conflict_target;
    let mut rollback_partitions = None;
    if t.report.partitioned {
        let extra: Vec<&String> = t
            .report
            .partition_key
            .iter()
            .filter(|c| !t.key.columns.contains(c))
            .collect();
        let columns = t
            .key
            .columns
            .iter()
            .chain(extra.iter().copied())
            .map(|c| t.q(c))
            .collect::<Vec<_>>()
            .join(", ");
        conflict_target = columns.clone();
        notes.push(
            "The table is partitioned: the unique index is built per partition, CONCURRENTLY, and"
                .into(),
        );
        notes.push(
            "attached to an index on the parent; a unique key must include the partition key."
                .into(),
        );
        notes.push(
            "Only the direct partitions are indexed here: a partition that is itself partitioned"
                .into(),
        );
        notes.push("keeps the parent's index invalid until it is indexed the same way.".into());
        if !extra.is_empty() {
            notes.push(format!(
                "The index is on the natural key plus the partition key ({}): it rejects a",
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
        if !t.nullable_key.is_empty() && !nulls_not_distinct {
            notes.push(
                "Key columns may be NULL and PostgreSQL before 15 lets NULL keys repeat under a"
                    .into(),
            );
            notes.push(
                "unique index (a partitioned one cannot hold expressions): rows with a NULL key"
                    .into(),
            );
            notes.push("are checked only by the verify query and a scheduled audit.".into());
        }
        let partitioned = PartitionedIndex {
            t,
            parent_index: &qualified_index,
        };
        enforce_why.extend([
            "An index on the parent alone (ON ONLY: instant, it reads no rows), then per partition"
                .to_string(),
            "a unique index built without blocking writes (CONCURRENTLY, after dropping an".into(),
            "INVALID leftover of an interrupted run), attached to the parent's index; once every"
                .into(),
            "partition's is attached the parent's index is valid and enforces the key, and new"
                .into(),
            "partitions get it automatically. (PostgreSQL cannot turn a partitioned index into a"
                .into(),
            "constraint with USING INDEX; ON CONFLICT uses the unique index all the same.)".into(),
            "psql's \\gexec runs each generated statement on its own, outside a transaction."
                .into(),
        ]);
        enforce.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {index} ON ONLY {table} ({columns}){nnd}",
            table = t.qualified,
        ));
        enforce.push(partitioned.each(
            "DROP INDEX CONCURRENTLY IF EXISTS %I.%I",
            "n.nspname, natkey_index.relname",
            &format!(
                "JOIN pg_class natkey_index ON natkey_index.relnamespace = n.oid \
                 AND natkey_index.relname = {part}\n\
                 JOIN pg_index natkey_ix ON natkey_ix.indexrelid = natkey_index.oid AND NOT natkey_ix.indisvalid",
                part = PARTITION_INDEX
            ),
        ));
        enforce.push(partitioned.each(
            &format!(
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS %I ON %I.%I ({}){nnd}",
                columns.replace('%', "%%")
            ),
            &format!("{PARTITION_INDEX}, n.nspname, c.relname"),
            "",
        ));
        enforce.push(partitioned.each(
            &format!(
                "ALTER INDEX {} ATTACH PARTITION %I.%I",
                qualified_index.replace('%', "%%")
            ),
            &format!("n.nspname, {PARTITION_INDEX}"),
            "",
        ));
        rollback_partitions = Some(partitioned.each(
            "DROP INDEX CONCURRENTLY IF EXISTS %I.%I",
            &format!("n.nspname, {PARTITION_INDEX}"),
            "",
        ));
    } else {
        enforce_why.push(
            "Builds the unique index without blocking writes (CONCURRENTLY), after dropping an"
                .into(),
        );
        let expressions = !t.nullable_key.is_empty() && !nulls_not_distinct;
        if expressions {
            enforce_why.push(
                "INVALID leftover of an interrupted earlier run. Key columns may be NULL, and"
                    .into(),
            );
            enforce_why.push(
                "PostgreSQL before 15 lets NULL keys repeat under UNIQUE: the index is on each such"
                    .into(),
            );
            enforce_why.push(
                "column with NULL replaced plus an IS NULL flag, so two NULL keys collide. (An index"
                    .into(),
            );
            enforce_why.push(
                "on expressions cannot become a constraint; ON CONFLICT uses it all the same.)"
                    .into(),
            );
        } else {
            enforce_why.push(
                "INVALID leftover of an interrupted earlier run, then turns it into a constraint."
                    .into(),
            );
            if !t.nullable_key.is_empty() {
                enforce_why.push(
                    "Key columns may be NULL: NULLS NOT DISTINCT makes two NULL keys the same key, as"
                        .into(),
                );
                enforce_why.push(
                    "GROUP BY (and the audit) count them; a plain UNIQUE would let them repeat."
                        .into(),
                );
            }
        }
        let parts: Vec<String> = t
            .key
            .columns
            .iter()
            .flat_map(|k| match t.nullable_key.iter().find(|c| &c.name == k) {
                Some(c) if expressions => vec![
                    format!("(COALESCE({}, {}))", t.q(k), super::stand_in(c, t.d)),
                    format!("({} IS NULL)", t.q(k)),
                ],
                _ => vec![t.q(k)],
            })
            .collect();
        conflict_target = parts.join(", ");
        enforce.push(do_block(&format!(
            "IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = {schema_literal} AND c.relname = {name} AND NOT i.indisvalid) THEN\n    \
             DROP INDEX {qualified_index};\n  END IF;",
            name = literal(&t.constraint),
        )));
        enforce.push(format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} ({conflict_target}){nnd}",
            table = t.qualified,
        ));
        if !expressions {
            enforce.push(do_block(&format!(
                "IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {name} \
                 AND conrelid = {rel}::regclass) THEN\n    \
                 ALTER TABLE {table} ADD CONSTRAINT {index} UNIQUE USING INDEX {index};\n  END IF;",
                name = literal(&t.constraint),
                rel = literal(&t.qualified),
                table = t.qualified,
            )));
        }
    }

    let cols: Vec<String> = t.load_columns().iter().map(|c| t.q(&c.name)).collect();
    let conflict = t.on_conflict_action("EXCLUDED");
    let load = vec![format!(
        "INSERT INTO {table} ({cols})\nSELECT {cols} FROM {staging}\nON CONFLICT ({conflict_target}) {conflict}",
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
    // On a partitioned table this drops the partitions' attached indexes too; indexes of an
    // interrupted run that were not attached yet go after it.
    rollback.push(format!("DROP INDEX IF EXISTS {qualified_index}"));
    rollback.extend(rollback_partitions);
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
        session,
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
            "asserted), never adds a copy. Replace the staging relation with your task's source,"
                .into(),
            "which must hold each natural key once (an upsert cannot update a row twice in one"
                .into(),
            "statement: PostgreSQL refuses, MySQL and SQLite apply the copies in turn).".into(),
        ]
    } else {
        vec![
            "Append-only facts: a retry finds every row already there and inserts nothing.".into(),
            "Replace the staging relation with your task's source.".into(),
        ]
    };
    if !t.report.load_metadata.is_empty() {
        why.push(format!(
            "The load metadata ({}) comes from the source too: the task sets it (e.g. now()).",
            t.report.load_metadata.join(", ")
        ));
    }
    if !t.report.surrogate_key.is_empty() {
        why.push(format!(
            "The surrogate key ({}) is left to the database; if the task writes it, derive it from",
            t.report.surrogate_key.join(", ")
        ));
        why.push("the natural key (a hash) instead of gen_random_uuid().".into());
    }
    why
}

/// The name of a partition's unique index, as an SQL expression over the partition's
/// `pg_class c` and `pg_namespace n`: readable, apart per partition, and cast to `name`, which
/// cuts it to 63 bytes as PostgreSQL cuts the identifier it creates (`left` counts characters,
/// and a multi-byte name would otherwise not be found again by the leftover check).
const PARTITION_INDEX: &str =
    "(left(c.relname, 45) || '_nk_' || left(md5(n.nspname || '.' || c.relname), 8))::name";

/// Statements run once per direct partition of a partitioned table, generated from the catalog
/// when the plan runs (the report does not list partitions) and executed by psql's `\gexec`.
struct PartitionedIndex<'a> {
    t: &'a Table<'a>,
    /// The parent's index, qualified.
    parent_index: &'a str,
}

impl PartitionedIndex<'_> {
    /// `SELECT format(template, args) FROM <partitions without an index attached to the
    /// parent's> ... \gexec`; `joins` narrows further.
    fn each(&self, template: &str, args: &str, joins: &str) -> String {
        format!(
            "SELECT format({template}, {args})\n\
             FROM pg_inherits natkey_p JOIN pg_class c ON c.oid = natkey_p.inhrelid\n\
             JOIN pg_namespace n ON n.oid = c.relnamespace\n{joins}{sep}\
             WHERE natkey_p.inhparent = {parent}::regclass AND c.relkind = 'r'\n\
             AND NOT EXISTS (SELECT 1 FROM pg_inherits natkey_a JOIN pg_index natkey_i ON natkey_i.indexrelid = natkey_a.inhrelid\n\
             WHERE natkey_a.inhparent = to_regclass({parent_index}) AND natkey_i.indrelid = c.oid)\n\
             ORDER BY c.relname\n{gexec}",
            template = literal(template),
            sep = if joins.is_empty() { "" } else { "\n" },
            parent = literal(&self.t.qualified),
            parent_index = literal(self.parent_index),
            gexec = super::GEXEC,
        )
    }
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
