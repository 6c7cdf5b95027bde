//! `dbt-incremental-without-unique-key`: a dbt model with `materialized='incremental'` and no
//! `unique_key`. dbt then appends the new rows on every run, so a retried run (or an
//! overlapping look-back window) loads them twice. The rewrite adds `unique_key` and an
//! `incremental_strategy` that fits the adapter.

use super::{FileContext, Hit};
use crate::config::TableName;
use crate::rewrite::edit::Edit;
use crate::rewrite::{Dialect, TableTarget};

pub const NAME: &str = "dbt-incremental-without-unique-key";

pub(crate) fn check(cx: &FileContext, out: &mut Vec<Hit>) {
    let Some(config) = &cx.dbt else {
        return;
    };
    if config.materialized.as_deref() != Some("incremental") || config.has_unique_key {
        return;
    }
    let model = cx.model.clone().unwrap_or_else(|| "this model".to_string());
    let target = TableTarget {
        name: TableName {
            schema: None,
            name: model.clone(),
        },
        quoted: false,
    };
    let message = format!(
        "{model} is an incremental model without unique_key: dbt appends its new rows on every \
         run, so a retried run, or rows that fall in the look-back window twice, are loaded \
         twice."
    );
    let strategy = strategy(cx.dialect);
    match cx.keys.find(&target).filter(|k| !k.natural_key.is_empty()) {
        Some(keys) => {
            let key = match keys.natural_key.as_slice() {
                [one] => format!("'{}'", one.replace('\'', "\\'")),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(|c| format!("'{}'", c.replace('\'', "\\'")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let comma = if config.empty { "" } else { ", " };
            out.push(Hit {
                rule: NAME,
                at: config.range.start,
                message,
                fix: format!(
                    "Added unique_key={key} and incremental_strategy='{strategy}': dbt then \
                     replaces the rows of each key instead of appending them."
                ),
                edits: vec![Edit::insert(
                    config.close_paren,
                    format!("{comma}unique_key={key}, incremental_strategy='{strategy}'"),
                )],
            });
        }
        None => out.push(Hit {
            rule: NAME,
            at: config.range.start,
            message,
            fix: format!(
                "Add unique_key=[natural key columns] and incremental_strategy='{strategy}' to \
                 config(). {}.",
                super::unknown_key(&target)
            ),
            edits: Vec::new(),
        }),
    }
}

/// The incremental strategy that replaces rows by key on each adapter.
fn strategy(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Snowflake | Dialect::BigQuery | Dialect::Databricks => "merge",
        Dialect::Postgres | Dialect::MySql | Dialect::Sqlite | Dialect::Redshift => "delete+insert",
    }
}

#[cfg(test)]
mod tests {
    use crate::config::TableName;
    use crate::keys::KeySource;
    use crate::rewrite::{Dialect, KnownKeys, TableKeys, analyze};

    const MODEL: &str = "{{\n  config(\n    materialized='incremental'\n  )\n}}\n\n\
        select order_id, line_item_id, amount_cents\nfrom {{ ref('stg_orders') }}\n\
        {% if is_incremental() %}\nwhere loaded_at > (select max(loaded_at) from {{ this }})\n{% endif %}\n";

    fn keys() -> KnownKeys {
        let mut k = KnownKeys::new();
        k.add(TableKeys::new(
            TableName {
                schema: None,
                name: "fct_orders".into(),
            },
            vec!["order_id".into(), "line_item_id".into()],
            KeySource::Config,
        ));
        k
    }

    #[test]
    fn an_incremental_model_gets_unique_key_and_a_strategy() {
        let report = analyze("models/fct_orders.sql", MODEL, Dialect::Snowflake, &keys());
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_eq!(report.findings.len(), 1, "{report:#?}");
        assert_eq!(report.findings[0].rule, super::NAME);
        let text = report.rewritten.expect("rewritten");
        insta::assert_snapshot!(text.lines().take(5).collect::<Vec<_>>().join("\n"), @r"
        {{
          config(
            materialized='incremental'
          , unique_key=['order_id', 'line_item_id'], incremental_strategy='merge')
        }}
        ");
        let again = analyze("models/fct_orders.sql", &text, Dialect::Snowflake, &keys());
        assert!(again.idempotent, "{again:#?}");
    }

    #[test]
    fn an_unknown_model_key_is_said() {
        let report = analyze("models/other.sql", MODEL, Dialect::Postgres, &keys());
        assert_eq!(report.findings.len(), 1);
        assert!(
            report.findings[0]
                .fix
                .contains("does not know the natural key")
        );
        assert_eq!(report.rewritten, None);
    }

    #[test]
    fn tables_views_and_keyed_incrementals_are_fine() {
        for model in [
            "{{ config(materialized='table') }}\nselect 1 as a",
            "{{ config(materialized='incremental', unique_key='id') }}\nselect 1 as id",
            "select 1 as a",
        ] {
            let report = analyze("models/fct_orders.sql", model, Dialect::Postgres, &keys());
            assert!(report.idempotent, "{model}\n{report:#?}");
        }
    }
}
