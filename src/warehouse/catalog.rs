//! What natkey reads from a warehouse's catalog: tables, columns, defaults and unique keys.

use std::fmt;

use serde::Serialize;

/// A table, named as its catalog names it. Names are data: they may hold any character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableRef {
    /// `schema.table` for people (not SQL: see [`super::Engine::qualified`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The broad type of a column, which is what natkey's rules care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Integer,
    Decimal,
    Float,
    Text,
    Date,
    Timestamp,
    Boolean,
    Uuid,
    /// JSON, arrays, binary, geometry...: compared as text, never a key or a measure.
    Other,
}

impl ColumnKind {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnKind::Integer | ColumnKind::Decimal | ColumnKind::Float
        )
    }

    pub fn is_temporal(self) -> bool {
        matches!(self, ColumnKind::Date | ColumnKind::Timestamp)
    }
}

/// How the database fills a column on insert, when it does so by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// PostgreSQL `GENERATED ... AS IDENTITY`.
    Identity,
    /// MySQL/MariaDB `AUTO_INCREMENT`.
    AutoIncrement,
    /// SQLite `INTEGER PRIMARY KEY`, an alias of the rowid.
    RowidAlias,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The type as the engine spells it (`numeric(12,2)`, `varchar(20)`).
    pub data_type: String,
    pub kind: ColumnKind,
    pub nullable: bool,
    /// The default expression as the catalog prints it (`nextval('s'::regclass)`, `now()`).
    pub default: Option<String>,
    pub generated: Option<Generated>,
    /// MySQL `ON UPDATE CURRENT_TIMESTAMP`.
    pub on_update_now: bool,
    /// Computed from other columns (`GENERATED ALWAYS AS (...)`): it cannot be inserted into.
    pub computed: bool,
}

/// A PRIMARY KEY, UNIQUE constraint or unique index over plain columns.
#[derive(Debug, Clone)]
pub struct UniqueKey {
    pub name: String,
    pub primary: bool,
    pub columns: Vec<String>,
    /// True when two NULLs count as different values, so rows with a NULL key column can repeat:
    /// MySQL, SQLite, and PostgreSQL without `NULLS NOT DISTINCT`.
    pub nulls_distinct: bool,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub table: TableRef,
    pub columns: Vec<Column>,
    pub unique_keys: Vec<UniqueKey>,
    /// The planner's row estimate, when the catalog keeps one.
    pub estimated_rows: Option<i64>,
    /// A PostgreSQL partitioned table (audited through its parent).
    pub partitioned: bool,
    /// The columns it is partitioned by (a unique key there must include them).
    pub partition_key: Vec<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Classifies a type name from a catalog into a [`ColumnKind`]. Works on PostgreSQL's
/// `format_type`, MySQL's `DATA_TYPE` and SQLite's declared types (by affinity rules).
pub fn kind_of(type_name: &str) -> ColumnKind {
    let t = type_name.to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or("").trim();
    if base.ends_with("[]") {
        return ColumnKind::Other;
    }
    match base {
        "uuid" => return ColumnKind::Uuid,
        "bool" | "boolean" => return ColumnKind::Boolean,
        "date" => return ColumnKind::Date,
        "json" | "jsonb" | "xml" | "bytea" | "blob" | "longblob" | "mediumblob" | "tinyblob"
        | "binary" | "varbinary" | "geometry" | "point" | "interval" | "inet" | "cidr"
        | "macaddr" | "tsvector" | "bit" | "set" | "enum" => {
            // MySQL enum/set compare fine as text; they are codes, so treat them as text.
            if base == "enum" || base == "set" {
                return ColumnKind::Text;
            }
            return ColumnKind::Other;
        }
        _ => {}
    }
    if base.starts_with("timestamp") || base.starts_with("datetime") {
        return ColumnKind::Timestamp;
    }
    if base.starts_with("time") || base == "year" {
        return ColumnKind::Text;
    }
    if matches!(base, "tinyint" | "year") && t.contains("(1)") {
        return ColumnKind::Boolean;
    }
    if base.contains("int") || base == "serial" || base == "bigserial" || base == "smallserial" {
        return ColumnKind::Integer;
    }
    if base.starts_with("numeric") || base.starts_with("decimal") || base == "money" {
        return ColumnKind::Decimal;
    }
    if base.starts_with("real")
        || base.starts_with("float")
        || base.starts_with("double")
        || base.contains("doub")
    {
        return ColumnKind::Float;
    }
    if base.contains("char")
        || base.contains("text")
        || base.contains("clob")
        || base == "name"
        || base == "citext"
    {
        return ColumnKind::Text;
    }
    if base.is_empty() {
        // SQLite columns without a declared type hold anything; treat them as text.
        return ColumnKind::Text;
    }
    if base.contains("date") {
        return ColumnKind::Date;
    }
    ColumnKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_map_to_kinds_across_engines() {
        let cases = [
            ("integer", ColumnKind::Integer),
            ("bigint", ColumnKind::Integer),
            ("int(11)", ColumnKind::Integer),
            ("INTEGER", ColumnKind::Integer),
            ("numeric(12,2)", ColumnKind::Decimal),
            ("decimal", ColumnKind::Decimal),
            ("double precision", ColumnKind::Float),
            ("REAL", ColumnKind::Float),
            ("character varying(20)", ColumnKind::Text),
            ("character(3)", ColumnKind::Text),
            ("TEXT", ColumnKind::Text),
            ("date", ColumnKind::Date),
            ("timestamp without time zone", ColumnKind::Timestamp),
            ("timestamp with time zone", ColumnKind::Timestamp),
            ("datetime", ColumnKind::Timestamp),
            ("uuid", ColumnKind::Uuid),
            ("jsonb", ColumnKind::Other),
            ("integer[]", ColumnKind::Other),
            ("boolean", ColumnKind::Boolean),
            ("tinyint(1)", ColumnKind::Boolean),
            ("", ColumnKind::Text),
        ];
        for (name, kind) in cases {
            assert_eq!(kind_of(name), kind, "{name}");
        }
    }
}
