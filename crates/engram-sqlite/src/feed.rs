//! The change feed derived indexes replay, and the attribute table loader.

use engram_core::{Change, ChangeOp, Decoded, DocAttrs, IndexDoc, Key};
use sqlx::Row;
use std::sync::Arc;

use crate::codec::{self, attr_cols};
use crate::{Result, SqliteStore};

impl SqliteStore {
    pub(crate) async fn changes(&self, after_seq: u64, limit: usize) -> Result<Vec<Change>> {
        // Text and vector are only read for rows that become an upsert.
        let rows = sqlx::query(concat!(
            "SELECT seq, id, ",
            attr_cols!(),
            ", (state = 'ready' AND deleted_at IS NULL AND vector IS NOT NULL) AS indexable, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL THEN text END AS text, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL THEN vector END AS vector, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL AND target_checksum = checksum \
             AND target_version = (SELECT version FROM embedding_models WHERE slot = 'target') \
             THEN target_vector END AS target_vector \
             FROM memories WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(codec::int(after_seq))
        .bind(codec::limit(limit))
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // seq and key are guarded integers (migration 0006; key is the
            // rowid): the feed can always advance past a row.
            let seq = codec::unsigned(row.try_get("seq")?, "seq")?;
            let key = codec::unsigned(row.try_get("key")?, "key")?;
            let op = match codec::decoded(row, "key", |row| op(key, row))? {
                Ok(op) => op,
                Err(c) => ChangeOp::Corrupt(c),
            };
            out.push(Change { seq, key, op });
        }
        Ok(out)
    }

    pub(crate) async fn attrs_page(
        &self,
        after: Option<Key>,
        limit: usize,
    ) -> Result<Vec<Decoded<(Key, DocAttrs)>>> {
        let rows = sqlx::query(concat!(
            "SELECT id, ",
            attr_cols!(),
            " FROM memories WHERE key > ? AND state = 'ready' AND deleted_at IS NULL \
             AND vector IS NOT NULL ORDER BY key LIMIT ?"
        ))
        .bind(after.map_or(0, codec::int))
        .bind(codec::limit(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::attrs))
            .collect()
    }
}

/// What a decodable feed row asks of the indexes.
fn op(key: Key, row: &sqlx::sqlite::SqliteRow) -> Result<ChangeOp> {
    if !row.try_get::<bool, _>("indexable")? {
        return Ok(ChangeOp::Remove);
    }
    let (_, attrs) = codec::attrs(row)?;
    let text: Option<String> = row.try_get("text")?;
    let vector: Option<Vec<u8>> = row.try_get("vector")?;
    let target: Option<Vec<u8>> = row.try_get("target_vector")?;
    Ok(ChangeOp::Upsert(Arc::new(IndexDoc {
        key,
        text: text.unwrap_or_default(),
        context: String::new(),
        vector: codec::blob_to_vector(vector.as_deref().unwrap_or_default())?,
        target_vector: target.as_deref().map(codec::blob_to_vector).transpose()?,
        attrs: Arc::new(attrs),
    })))
}
