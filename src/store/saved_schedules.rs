//! Schedules made on the Schedules page (`saved_schedules`, migration
//! `20261206000001_saved_schedules.sql`): stored as the `[[schedule]]` entry they would be in
//! natkey.toml, so the page, the API and the scheduler read them exactly like the file's.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, now};
use crate::schedule::ScheduleConfig;

/// A schedule as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSchedule {
    /// The entry, or why its stored definition cannot be read.
    pub config: Result<ScheduleConfig, String>,
    pub name: String,
    /// Slots before this instant never run.
    pub created_at: DateTime<Utc>,
    pub created_by: Option<String>,
}

impl Store {
    /// Every saved schedule, by name.
    pub async fn saved_schedules(&self) -> Result<Vec<SavedSchedule>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, definition, created_at, created_by FROM saved_schedules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let definition: String = row.try_get("definition")?;
                let created_at: String = row.try_get("created_at")?;
                Ok(SavedSchedule {
                    config: serde_json::from_str(&definition)
                        .map_err(|e| format!("its stored definition is unreadable: {e}")),
                    created_at: DateTime::parse_from_rfc3339(&created_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                    created_by: row.try_get("created_by")?,
                    name,
                })
            })
            .collect()
    }

    /// Saves a new schedule; `false` (and nothing written) when one of that name is saved already.
    pub async fn save_schedule(
        &self,
        config: &ScheduleConfig,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let definition = serde_json::to_string(config)
            .map_err(|e| StoreError::Sql(sqlx::Error::Encode(e.into())))?;
        let inserted = sqlx::query(
            "INSERT INTO saved_schedules (name, definition, created_at, created_by) \
             VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&config.name)
        .bind(definition)
        .bind(now())
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Deletes a saved schedule and its pause; its runs and slots stay in the history. `false`
    /// when no schedule of that name was saved.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM saved_schedules WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 1 {
            sqlx::query("DELETE FROM schedule_pauses WHERE schedule = ?")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> ScheduleConfig {
        ScheduleConfig {
            name: name.into(),
            warehouse: "dw".into(),
            cron: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            schemas: vec!["sales".into()],
            tables: vec![r#""Weird ""Table"" <script>""#.into()],
            notify: vec![],
        }
    }

    #[tokio::test]
    async fn a_saved_schedule_reads_back_as_saved_once_and_goes_with_its_pause() {
        let path = std::env::temp_dir().join(format!(
            "natkey-saved-schedules-{}-{}/natkey.db",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        let store = Store::open(&path).await.expect("store");
        assert!(
            store
                .save_schedule(&entry("nightly"), Some("ana"))
                .await
                .expect("save")
        );
        let mut other = entry("nightly");
        other.cron = "0 3 * * *".into();
        assert!(
            !store.save_schedule(&other, None).await.expect("save"),
            "a second schedule of the same name is refused"
        );
        let saved = store.saved_schedules().await.expect("list");
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].config, Ok(entry("nightly")), "the first one stays");
        assert_eq!(saved[0].created_by.as_deref(), Some("ana"));
        assert!(saved[0].created_at > Utc::now() - chrono::TimeDelta::minutes(1));

        store
            .set_paused("nightly", true, None)
            .await
            .expect("pause");
        assert!(store.delete_schedule("nightly").await.expect("delete"));
        assert!(!store.delete_schedule("nightly").await.expect("delete"));
        assert!(store.saved_schedules().await.expect("list").is_empty());
        assert!(store.paused_schedules().await.expect("paused").is_empty());
    }
}
