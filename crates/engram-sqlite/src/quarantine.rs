//! The quarantine table: rows that could not be decoded (see
//! `engram_core::quarantine`).

use engram_core::{Key, QuarantineEntry, QuarantineSource};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::codec::{self, micros, to_json};
use crate::{Result, SqliteError, SqliteStore};

impl SqliteStore {
    pub(crate) async fn put_quarantine(&self, entries: Vec<QuarantineEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO quarantine (key, memory_id, tenant, source, seq, error, \
                 first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (key) DO UPDATE SET memory_id = excluded.memory_id, \
                 tenant = excluded.tenant, source = excluded.source, seq = excluded.seq, \
                 error = excluded.error, last_seen = excluded.last_seen",
            )
            .bind(codec::int(e.key))
            .bind(e.memory_id.map(|id| id.to_string()))
            .bind(e.tenant)
            .bind(e.source.as_str())
            .bind(e.seq.map(codec::int))
            .bind(e.error)
            .bind(micros(e.first_seen))
            .bind(micros(e.last_seen))
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn release(&self, keys: &[Key]) -> Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM quarantine WHERE key IN (SELECT value FROM json_each(?))")
            .bind(to_json!(keys, "keys")?)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) async fn quarantine_page(
        &self,
        tenant: Option<&str>,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>> {
        let rows = sqlx::query(
            "SELECT key, memory_id, tenant, source, seq, error, first_seen, last_seen \
             FROM quarantine WHERE (?1 IS NULL OR tenant = ?1) AND key > ?2 ORDER BY key LIMIT ?3",
        )
        .bind(tenant)
        .bind(after.map_or(0, codec::int))
        .bind(codec::limit(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(entry).collect()
    }
}

fn entry(row: &SqliteRow) -> Result<QuarantineEntry> {
    let source: String = row.try_get("source")?;
    Ok(QuarantineEntry {
        key: codec::unsigned(row.try_get("key")?, "quarantine.key")?,
        memory_id: row
            .try_get::<Option<String>, _>("memory_id")?
            .map(|s| codec::uuid(&s, "quarantine.memory_id"))
            .transpose()?,
        tenant: row.try_get("tenant")?,
        source: QuarantineSource::parse(&source)
            .ok_or_else(|| SqliteError::corrupt(format!("quarantine.source: {source:?}")))?,
        seq: row
            .try_get::<Option<i64>, _>("seq")?
            .map(|v| codec::unsigned(v, "quarantine.seq"))
            .transpose()?,
        error: row.try_get("error")?,
        first_seen: codec::time(row.try_get("first_seen")?, "quarantine.first_seen")?,
        last_seen: codec::time(row.try_get("last_seen")?, "quarantine.last_seen")?,
    })
}
