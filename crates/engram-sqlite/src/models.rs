//! Re-embedding: the recorded models and the target vector slot
//! (see `engram_core::reembed`).

use engram_core::{Decoded, ModelInfo, ModelState, ReembedItem, ReembedProgress, TargetVector};
use sqlx::{Row, SqliteConnection};

use crate::codec::{self, vector_to_blob};
use crate::{Result, SqliteError, SqliteStore};

/// A memory's active vector is current: it embeds the memory's text.
const HAS_ACTIVE: &str = "vector IS NOT NULL AND embedded_checksum = checksum";
/// Its target vector is current (`?1` is the target's version; never NULL,
/// so `NOT` works).
const HAS_TARGET: &str = "coalesce(target_version = ?1 AND target_checksum = checksum, 0)";

pub(crate) async fn state(conn: &mut SqliteConnection) -> Result<ModelState> {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT slot, name, version, dims FROM embedding_models")
            .fetch_all(conn)
            .await?;
    let mut state = ModelState::default();
    for (slot, name, version, dims) in rows {
        let m = ModelInfo {
            name,
            version,
            dims: usize::try_from(dims).map_err(|_| SqliteError::corrupt("model dims"))?,
        };
        match slot.as_str() {
            "active" => state.active = Some(m),
            _ => state.target = Some(m),
        }
    }
    Ok(state)
}

async fn put_slot(conn: &mut SqliteConnection, slot: &str, m: &ModelInfo) -> Result<()> {
    sqlx::query(
        "INSERT INTO embedding_models (slot, name, version, dims) VALUES (?, ?, ?, ?) \
         ON CONFLICT (slot) DO UPDATE SET name = excluded.name, version = excluded.version, \
         dims = excluded.dims",
    )
    .bind(slot)
    .bind(&m.name)
    .bind(&m.version)
    .bind(i64::try_from(m.dims).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn model_state(&self) -> Result<ModelState> {
        let mut conn = self.reader.acquire().await?;
        state(&mut conn).await
    }

    pub(crate) async fn init_model(&self, model: &ModelInfo) -> Result<ModelState> {
        let mut tx = self.begin_write().await?;
        let mut s = state(tx.conn()).await?;
        if s.active.is_none() {
            put_slot(tx.conn(), "active", model).await?;
            s.active = Some(model.clone());
        }
        tx.commit().await?;
        Ok(s)
    }

    pub(crate) async fn begin_reembed(&self, target: &ModelInfo) -> Result<ModelState> {
        let mut tx = self.begin_write().await?;
        let mut s = state(tx.conn()).await?;
        if s.active.as_ref().map(|a| &a.version) == Some(&target.version) {
            return Err(SqliteError::Conflict(format!(
                "model version {:?} is the active model already",
                target.version
            )));
        }
        if s.target.as_ref() != Some(target) {
            put_slot(tx.conn(), "target", target).await?;
            s.target = Some(target.clone());
        }
        tx.commit().await?;
        Ok(s)
    }

    pub(crate) async fn reembed_todo(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Decoded<ReembedItem>>> {
        let mut conn = self.reader.acquire().await?;
        let Some(target) = state(&mut conn).await?.target else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(&format!(
            "SELECT key, id, tenant, checksum, text, speaker FROM memories WHERE key > ?2 AND {HAS_ACTIVE} \
             AND NOT ({HAS_TARGET}) ORDER BY key LIMIT ?3"
        ))
        .bind(&target.version)
        .bind(after.map_or(0, codec::int))
        .bind(codec::limit(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                codec::decoded(row, "key", |row| {
                    Ok(ReembedItem {
                        key: codec::unsigned(row.try_get("key")?, "key")?,
                        checksum: row.try_get("checksum")?,
                        text: row.try_get("text")?,
                        speaker: row.try_get("speaker")?,
                    })
                })
            })
            .collect()
    }

    pub(crate) async fn put_target_vectors(
        &self,
        model: &ModelInfo,
        items: Vec<TargetVector>,
    ) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        if state(tx.conn()).await?.target.as_ref() != Some(model) {
            return Ok(0);
        }
        let mut written = 0;
        for item in items {
            let key = codec::int(item.key);
            let current: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM memories WHERE key = ? AND checksum = ? AND {HAS_ACTIVE}"
            ))
            .bind(key)
            .bind(&item.checksum)
            .fetch_optional(tx.conn())
            .await?;
            if current.is_none() {
                continue;
            }
            let seq = tx.next_seq().await?;
            sqlx::query(
                "UPDATE memories SET target_vector = ?, target_checksum = ?, target_version = ?, \
                 seq = ? WHERE key = ?",
            )
            .bind(vector_to_blob(&item.vector))
            .bind(&item.checksum)
            .bind(&model.version)
            .bind(seq)
            .bind(key)
            .execute(tx.conn())
            .await?;
            written += 1;
        }
        tx.commit().await?;
        Ok(written)
    }

    pub(crate) async fn reembed_progress(&self) -> Result<ReembedProgress> {
        let mut conn = self.reader.acquire().await?;
        let Some(target) = state(&mut conn).await?.target else {
            return Ok(ReembedProgress::default());
        };
        let (total, done): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(sum({HAS_TARGET}), 0) FROM memories WHERE {HAS_ACTIVE}"
        ))
        .bind(&target.version)
        .fetch_one(&mut *conn)
        .await?;
        Ok(ReembedProgress {
            done: codec::unsigned(done, "count")?,
            total: codec::unsigned(total, "count")?,
        })
    }

    pub(crate) async fn switch_model(&self, target: &ModelInfo) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if state(tx.conn()).await?.target.as_ref() != Some(target) {
            return Ok(false);
        }
        let missing: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM memories WHERE {HAS_ACTIVE} AND NOT ({HAS_TARGET})"
        ))
        .bind(&target.version)
        .fetch_one(tx.conn())
        .await?;
        if missing > 0 {
            return Ok(false);
        }
        // Pending memories keep their (stale) old vector until their job
        // completes with the new model; nothing serves it meanwhile.
        sqlx::query(&format!(
            "UPDATE memories SET vector = target_vector, embedded_checksum = target_checksum, \
             embedding_model = ?2, embedding_version = ?1, target_vector = NULL, \
             target_checksum = NULL, target_version = NULL WHERE {HAS_TARGET}"
        ))
        .bind(&target.version)
        .bind(&target.name)
        .execute(tx.conn())
        .await?;
        sqlx::query("UPDATE memories SET target_vector = NULL, target_checksum = NULL, target_version = NULL WHERE target_version IS NOT NULL")
            .execute(tx.conn())
            .await?;
        put_slot(tx.conn(), "active", target).await?;
        sqlx::query("DELETE FROM embedding_models WHERE slot = 'target'")
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
