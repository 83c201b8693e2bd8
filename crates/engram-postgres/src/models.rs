//! Re-embedding: the recorded models and the target vector slot
//! (see `engram_core::reembed`). Writers that depend on the models lock
//! their rows first: `FOR SHARE` to write vectors, `FOR UPDATE` to switch,
//! so no completion can commit a vector of a model being switched away from.

use engram_core::{Decoded, ModelInfo, ModelState, ReembedItem, ReembedProgress, TargetVector};
use sqlx::{PgConnection, Row};

use crate::codec;
use crate::{PgError, PgStore, Result};

/// A memory's active vector is current: it embeds the memory's text.
const HAS_ACTIVE: &str = "embedding IS NOT NULL AND embedded_checksum = checksum";
/// Its target vector is current (`$1` is the target's version; never NULL,
/// so `NOT` works).
const HAS_TARGET: &str = "coalesce(target_version = $1 AND target_checksum = checksum, false)";

#[derive(Clone, Copy)]
pub(crate) enum Lock {
    None,
    Share,
    Update,
}

pub(crate) async fn state(conn: &mut PgConnection, lock: Lock) -> Result<ModelState> {
    let sql = match lock {
        Lock::None => "SELECT slot, name, version, dims FROM embedding_models",
        Lock::Share => "SELECT slot, name, version, dims FROM embedding_models FOR SHARE",
        Lock::Update => "SELECT slot, name, version, dims FROM embedding_models FOR UPDATE",
    };
    let rows = sqlx::query(sql).fetch_all(conn).await?;
    let mut state = ModelState::default();
    for row in rows {
        let slot: String = row.try_get("slot")?;
        let dims: i32 = row.try_get("dims")?;
        let m = ModelInfo {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            dims: usize::try_from(dims).map_err(|_| PgError::corrupt("model dims"))?,
        };
        match slot.as_str() {
            "active" => state.active = Some(m),
            _ => state.target = Some(m),
        }
    }
    Ok(state)
}

async fn put_slot(conn: &mut PgConnection, slot: &str, m: &ModelInfo) -> Result<()> {
    sqlx::query(
        "INSERT INTO embedding_models (slot, name, version, dims) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (slot) DO UPDATE SET name = excluded.name, version = excluded.version, \
         dims = excluded.dims",
    )
    .bind(slot)
    .bind(&m.name)
    .bind(&m.version)
    .bind(i32::try_from(m.dims).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

impl PgStore {
    pub(crate) async fn model_state(&self) -> Result<ModelState> {
        let mut conn = self.pool.acquire().await?;
        state(&mut conn, Lock::None).await
    }

    pub(crate) async fn init_model(&self, model: &ModelInfo) -> Result<ModelState> {
        let mut tx = self.pool.begin().await?;
        // Two nodes starting at once: one inserts, the other sees its row.
        sqlx::query(
            "INSERT INTO embedding_models (slot, name, version, dims) \
             VALUES ('active', $1, $2, $3) ON CONFLICT (slot) DO NOTHING",
        )
        .bind(&model.name)
        .bind(&model.version)
        .bind(i32::try_from(model.dims).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        let s = state(&mut tx, Lock::None).await?;
        tx.commit().await?;
        Ok(s)
    }

    pub(crate) async fn begin_reembed(&self, target: &ModelInfo) -> Result<ModelState> {
        let mut tx = self.pool.begin().await?;
        let mut s = state(&mut tx, Lock::Update).await?;
        if s.active.as_ref().map(|a| &a.version) == Some(&target.version) {
            return Err(PgError::Conflict(format!(
                "model version {:?} is the active model already",
                target.version
            )));
        }
        if s.target.as_ref() != Some(target) {
            put_slot(&mut tx, "target", target).await?;
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
        let mut conn = self.pool.acquire().await?;
        let Some(target) = state(&mut conn, Lock::None).await?.target else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(&format!(
            "SELECT key, id, tenant, checksum, text, speaker FROM memories WHERE key > $2 AND {HAS_ACTIVE} \
             AND NOT ({HAS_TARGET}) ORDER BY key LIMIT $3"
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
        mut items: Vec<TargetVector>,
    ) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        if state(tx.conn(), Lock::Share).await?.target.as_ref() != Some(model) {
            return Ok(0);
        }
        // Memory rows in key order (the lock order), then the seqs.
        items.sort_by_key(|i| i.key);
        items.dedup_by_key(|i| i.key);
        let keys: Vec<i64> = items.iter().map(|i| codec::int(i.key)).collect();
        let current: Vec<(i64, String)> = sqlx::query_as(&format!(
            "SELECT key, checksum FROM memories WHERE key = ANY($1) AND {HAS_ACTIVE} \
             ORDER BY key FOR UPDATE"
        ))
        .bind(&keys)
        .fetch_all(tx.conn())
        .await?;
        let current: std::collections::HashMap<i64, String> = current.into_iter().collect();
        items.retain(|i| current.get(&codec::int(i.key)) == Some(&i.checksum));
        if items.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = tx.next_seqs(items.len()).await?.collect();
        for (item, seq) in items.iter().zip(&seqs) {
            sqlx::query(
                "UPDATE memories SET target_embedding = $1::real[]::vector, \
                 target_checksum = $2, target_version = $3, seq = $4 WHERE key = $5",
            )
            .bind(&item.vector)
            .bind(&item.checksum)
            .bind(&model.version)
            .bind(seq)
            .bind(codec::int(item.key))
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
        Ok(items.len())
    }

    pub(crate) async fn reembed_progress(&self) -> Result<ReembedProgress> {
        let mut conn = self.pool.acquire().await?;
        let Some(target) = state(&mut conn, Lock::None).await?.target else {
            return Ok(ReembedProgress::default());
        };
        let (total, done): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*), count(*) FILTER (WHERE {HAS_TARGET}) FROM memories \
             WHERE {HAS_ACTIVE}"
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
        let mut tx = self.pool.begin().await?;
        // Waits for every completion and back-fill write in flight (they hold
        // the rows FOR SHARE) and keeps new ones out until the switch commits.
        if state(&mut tx, Lock::Update).await?.target.as_ref() != Some(target) {
            return Ok(false);
        }
        let missing: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM memories WHERE {HAS_ACTIVE} AND NOT ({HAS_TARGET})"
        ))
        .bind(&target.version)
        .fetch_one(&mut *tx)
        .await?;
        if missing > 0 {
            return Ok(false);
        }
        // One statement: searches see the old vectors (and the old model's
        // index entries) until it commits, then only the new ones.
        sqlx::query(&format!(
            "UPDATE memories SET embedding = target_embedding, \
             embedded_checksum = target_checksum, embedding_model = $2, \
             embedding_version = $1, target_embedding = NULL, target_checksum = NULL, \
             target_version = NULL WHERE {HAS_TARGET}"
        ))
        .bind(&target.version)
        .bind(&target.name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE memories SET target_embedding = NULL, target_checksum = NULL, \
             target_version = NULL WHERE target_version IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?;
        put_slot(&mut tx, "active", target).await?;
        sqlx::query("DELETE FROM embedding_models WHERE slot = 'target'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
