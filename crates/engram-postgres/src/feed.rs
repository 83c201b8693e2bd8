//! The change feed derived indexes replay, and the attribute table loader.

use engram_core::{Change, ChangeOp, Decoded, DocAttrs, IndexDoc, Key};
use sqlx::Row;
use std::sync::Arc;

use crate::codec::{self, attr_cols};
use crate::{PgStore, Result};

impl PgStore {
    /// Rows with `seq > after_seq`, by seq. Seqs are handed out under a row
    /// lock held until commit (see the crate docs), so a row visible here
    /// never has a smaller seq than a row that becomes visible later.
    pub(crate) async fn changes(&self, after_seq: u64, limit: usize) -> Result<Vec<Change>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Text and vector are only read for rows that become an upsert.
        let rows = sqlx::query(concat!(
            "SELECT seq, id, ",
            attr_cols!(),
            ", (state = 'ready' AND deleted_at IS NULL AND embedding IS NOT NULL) AS indexable, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL THEN text END AS text, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL THEN embedding::real[] END \
             AS vector, \
             CASE WHEN state = 'ready' AND deleted_at IS NULL AND target_checksum = checksum \
             AND target_version = (SELECT version FROM embedding_models WHERE slot = 'target') \
             THEN target_embedding::real[] END AS target_vector \
             FROM memories WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(codec::int(after_seq))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // seq and key are NOT NULL bigints: the feed can always
            // advance past a row.
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "SELECT id, ",
            attr_cols!(),
            " FROM memories WHERE key > $1 AND state = 'ready' AND deleted_at IS NULL \
             AND embedding IS NOT NULL ORDER BY key LIMIT $2"
        ))
        .bind(after.map_or(0, codec::int))
        .bind(codec::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| codec::decoded(r, "key", codec::attrs))
            .collect()
    }
}

/// What a decodable feed row asks of the indexes.
fn op(key: Key, row: &sqlx::postgres::PgRow) -> Result<ChangeOp> {
    if !row.try_get::<bool, _>("indexable")? {
        return Ok(ChangeOp::Remove);
    }
    let (_, attrs) = codec::attrs(row)?;
    let text: Option<String> = row.try_get("text")?;
    let vector: Option<Vec<f32>> = row.try_get("vector")?;
    Ok(ChangeOp::Upsert(Arc::new(IndexDoc {
        key,
        text: text.unwrap_or_default(),
        context: String::new(),
        vector: vector.unwrap_or_default(),
        target_vector: row.try_get("target_vector")?,
        attrs: Arc::new(attrs),
    })))
}
