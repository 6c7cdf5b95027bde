//! Who owns a run: every process that opens the store is an *instance* with a lease it renews
//! (`instances`, migration `20261205000001_instances.sql`). Runs and scheduled slots record the
//! instance that started them, and [`Store::sweep`] marks them `interrupted` only once that
//! owner is gone, so two processes on one store never cut each other's live audits short.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Row, SqliteConnection};

use super::{Store, StoreError};
use crate::schedule::slot_text;

/// How long an instance counts as alive after its last heartbeat.
pub const LEASE: TimeDelta = TimeDelta::seconds(60);

/// How often `natkey serve` renews its lease and sweeps ([`Store::keep_alive`]): a quarter of
/// the lease, so a few late heartbeats never let a live process look gone.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// This process, as the store knows it.
#[derive(Debug)]
pub struct Instance {
    /// `host:pid:nonce`: unique per process start, even when a container restarts as PID 1.
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Instance {
    pub fn this_process() -> Instance {
        let host = host_name();
        let pid = std::process::id();
        let nonce = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        // Two stores opened in one process within a nanosecond still differ.
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Instance {
            id: format!("{host}:{pid}:{nonce:x}{n}"),
            host,
            pid,
        }
    }
}

/// The machine's host name, as instances record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` of this host is alive. Where natkey cannot look (no `/proc`), it is
/// taken as alive and only its lease decides.
fn pid_is_alive(pid: i64) -> bool {
    let proc_root = std::path::Path::new("/proc");
    !proc_root.join("self").exists() || proc_root.join(pid.to_string()).exists()
}

/// What a sweep ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Audit runs marked `interrupted`.
    pub runs: u64,
    /// Scheduled slots marked `interrupted`.
    pub slots: u64,
}

impl Store {
    /// The id runs and slots this process starts are recorded under.
    pub fn instance(&self) -> &str {
        &self.instance.id
    }

    /// Renews this process's lease until `now` + [`LEASE`].
    pub async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.renew_lease(&mut conn, now).await
    }

    pub(super) async fn renew_lease(
        &self,
        conn: &mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
                 lease_until = excluded.lease_until",
        )
        .bind(&self.instance.id)
        .bind(&self.instance.host)
        .bind(i64::from(self.instance.pid))
        .bind(slot_text(now))
        .bind(slot_text(now + LEASE))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Forgets the instances that are gone (lease expired at `now`, or on this host with a pid
    /// that is no longer alive), then marks the queued or running runs and the running slots
    /// they owned `interrupted`. Runs of live instances are never touched.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.sweep_on(&mut conn, now).await
    }

    pub(super) async fn sweep_on(
        &self,
        conn: &mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> Result<Swept, StoreError> {
        let now_text = slot_text(now);
        let others = sqlx::query("SELECT id, host, pid, lease_until FROM instances WHERE id <> ?")
            .bind(&self.instance.id)
            .fetch_all(&mut *conn)
            .await?;
        for row in others {
            let id: String = row.try_get("id")?;
            let host: String = row.try_get("host")?;
            let pid: i64 = row.try_get("pid")?;
            let lease_until: String = row.try_get("lease_until")?;
            let dead_here = host == self.instance.host
                && pid != i64::from(self.instance.pid)
                && !pid_is_alive(pid);
            if dead_here {
                sqlx::query("DELETE FROM instances WHERE id = ?")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
            } else if lease_until < now_text {
                // Checked again in the statement: a heartbeat that came since keeps it.
                sqlx::query("DELETE FROM instances WHERE id = ? AND lease_until < ?")
                    .bind(&id)
                    .bind(&now_text)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        // An owner with no instance row is gone; NULL owners are runs of a natkey from before
        // owners were recorded, which cannot still be running.
        let runs = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = ?, current_table = NULL, \
                 error = 'natkey stopped while this audit ran' \
             WHERE status IN ('queued', 'running') \
               AND (owner IS NULL OR owner NOT IN (SELECT id FROM instances))",
        )
        .bind(&now_text)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let slots = sqlx::query(
            "UPDATE scheduled_runs SET status = 'interrupted', finished_at = ?, \
                 reason = 'natkey stopped while this scheduled audit ran' \
             WHERE status = 'running' AND owner NOT IN (SELECT id FROM instances)",
        )
        .bind(&now_text)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(Swept { runs, slots })
    }

    /// Ends the running slots whose linked audit run has ended (the process that waited for it
    /// died, or lost track of it) with that run's outcome, so the schedule is not Busy forever.
    pub async fn release_ended_slots(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE scheduled_runs SET \
                 status = CASE r.status WHEN 'succeeded' THEN 'succeeded' \
                     WHEN 'failed' THEN 'failed' ELSE 'interrupted' END, \
                 reason = CASE r.status WHEN 'succeeded' THEN NULL \
                     ELSE COALESCE(r.error, 'the audit ended ' || r.status) END, \
                 finished_at = ? \
             FROM runs AS r \
             WHERE scheduled_runs.run_id = r.id AND scheduled_runs.status = 'running' \
               AND r.status NOT IN ('queued', 'running')",
        )
        .bind(slot_text(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// `natkey serve`'s chore until the process ends: renew the lease and sweep, every
    /// [`HEARTBEAT`].
    pub async fn keep_alive(self) {
        loop {
            let now = Utc::now();
            if let Err(e) = self.heartbeat(now).await {
                tracing::error!("renewing natkey's lease on its store: {e}");
            }
            match self.sweep(now).await {
                Ok(Swept { runs: 0, slots: 0 }) => {}
                Ok(swept) => eprintln!(
                    "natkey: {} audit run(s) and {} scheduled run(s) of a stopped natkey marked \
                     interrupted",
                    swept.runs, swept.slots
                ),
                Err(e) => tracing::error!("sweeping runs of stopped processes: {e}"),
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }
}
