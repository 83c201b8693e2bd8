//! `engram backup` and `engram restore` for the embedded store.
//!
//! A backup is a SQLite snapshot (`VACUUM INTO`: consistent while the server
//! keeps writing) plus a manifest with SHA-256 checksums, written to a
//! directory or S3 by `engram-backup`. The vectors live in the store, so the
//! derived indexes are not copied: `restore` verifies everything, installs
//! the database and rebuilds the indexes from it.
//!
//! In the scale-out mode the store is PostgreSQL, whose own tools (pg_dump,
//! pgBackRest, point-in-time recovery) are the right way to back it up; the
//! pgvector and full-text indexes are inside it.

use engram_backup::{BackupError, Backups, Listing, Manifest, S3Target, Target};
use engram_sqlite::SqliteStore;
use std::path::{Path, PathBuf};

use crate::config::{Config, ObjectsKind, StoreKind};
use crate::error::{bail, Context, Error, Result};
use crate::run::Rebuilt;

fn backups(cfg: &Config) -> Result<Backups> {
    let target = match cfg.objects {
        ObjectsKind::Fs => Target::Dir(cfg.objects_dir.clone()),
        ObjectsKind::S3 => {
            let s = &cfg.s3;
            Target::S3(S3Target {
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                bucket: s.bucket.clone().context("s3.bucket is not set")?,
                access_key_id: s.access_key_id.clone(),
                secret_access_key: s.secret_access_key.clone(),
                allow_http: s.allow_http,
            })
        }
    };
    let prefix = match cfg.objects {
        ObjectsKind::Fs => "",
        ObjectsKind::S3 => cfg.s3.prefix.as_str(),
    };
    Backups::open(&target, prefix).context("opening the backup location")
}

fn embedded_only(cfg: &Config) -> Result<()> {
    if cfg.store != StoreKind::Sqlite {
        bail!(
            Refused,
            "engram backup/restore cover the embedded store (store = \"sqlite\"). With \
             store = \"postgres\", back up PostgreSQL with its own tools (pg_dump, pgBackRest, \
             point-in-time recovery): the vectors and search indexes are inside it."
        );
    }
    Ok(())
}

fn db_path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join("engram.db")
}

/// A scratch folder inside the data directory (same file system, so the
/// restored database can be renamed into place).
fn scratch(cfg: &Config, what: &str) -> PathBuf {
    cfg.data_dir.join(format!(".{what}-{}", std::process::id()))
}

/// `engram backup create`: snapshot the store and upload it.
pub async fn create(cfg: &Config, name: Option<String>) -> Result<Manifest> {
    embedded_only(cfg)?;
    let db = db_path(cfg);
    if !db.exists() {
        bail!(
            Refused,
            "no database at {} (wrong --data-dir?)",
            db.display()
        );
    }
    let b = backups(cfg)?;
    let name = name.unwrap_or_else(|| engram_backup::default_name(chrono::Utc::now()));
    let tmp = scratch(cfg, "backup");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let r = async {
        let started = std::time::Instant::now();
        let store = SqliteStore::open(&db).await.context("opening the store")?;
        let snap = tmp.join("engram.db");
        let info = store.snapshot(&snap).await.context("snapshot")?;
        store.close().await;
        eprintln!(
            "snapshot: {} memories ({} live), change seq {}, {:.1}s; uploading to {}",
            info.memories,
            info.live,
            info.max_seq,
            started.elapsed().as_secs_f64(),
            b.location()
        );
        let meta = serde_json::json!({
            "snapshot": info,
            "data_dir": cfg.data_dir.display().to_string(),
        });
        let bytes = std::fs::metadata(&snap).map(|m| m.len()).unwrap_or(0);
        let report = crate::progress::start("upload", "bytes", bytes, b.progress());
        let m = b
            .create(&name, "sqlite", meta, &[("engram.db".into(), snap)])
            .await;
        drop(report);
        let m = m.with_context(|| format!("writing backup {name:?} to {}", b.location()))?;
        Ok::<_, Error>(m)
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

/// What the CLI shows of a backup.
pub fn summary(m: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "created_at": m.created_at,
        "store": m.store,
        "engram_version": m.engram_version,
        "meta": m.meta,
        "files": m.files,
    })
}

/// The backups at the configured location, complete and damaged.
pub async fn list(cfg: &Config) -> Result<Listing> {
    let b = backups(cfg)?;
    b.list()
        .await
        .with_context(|| format!("listing {}", b.location()))
}

/// Download backup `name` and check every file against its manifest.
pub async fn verify(cfg: &Config, name: &str) -> Result<Manifest> {
    let b = backups(cfg)?;
    let report = transfer_report(&b, name, "verify").await?;
    let m = b.verify(name).await;
    drop(report);
    m.map_err(explain)
}

/// Delete backup `name`; returns where it was.
pub async fn delete(cfg: &Config, name: &str) -> Result<String> {
    let b = backups(cfg)?;
    b.delete(name).await.map_err(explain)?;
    Ok(b.location().to_string())
}

/// Progress of reading backup `name` (its manifest gives the total).
async fn transfer_report(
    b: &Backups,
    name: &str,
    label: &'static str,
) -> Result<crate::progress::Report> {
    let m = b.manifest(name).await.map_err(explain)?;
    let total = m.files.iter().map(|f| f.bytes).sum();
    Ok(crate::progress::start(label, "bytes", total, b.progress()))
}

fn explain(e: BackupError) -> Error {
    match e {
        BackupError::Corrupt { .. } => Error::Refused(format!("{e}; refusing to use it")),
        other => other.into(),
    }
}

/// Verify backup `name`, install its database in the (empty) data directory
/// and rebuild the indexes. Nothing is written to the data directory's
/// database path unless every check passed.
pub async fn restore(cfg: Config, name: &str) -> Result<Rebuilt> {
    embedded_only(&cfg)?;
    let db = db_path(&cfg);
    // A leftover WAL would be replayed into the restored database.
    for f in ["engram.db", "engram.db-wal", "engram.db-shm"] {
        if cfg.data_dir.join(f).exists() {
            bail!(
                Refused,
                "{} already holds a database ({f}); restore into an empty --data-dir \
                 (or move the old one away first)",
                cfg.data_dir.display()
            );
        }
    }
    let b = backups(&cfg)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let staging = scratch(&cfg, "restore");
    let started = std::time::Instant::now();
    let report = transfer_report(&b, name, "download").await?;
    let m = b.download(name, &staging).await;
    drop(report);
    let m = m.map_err(explain)?;
    let r = install(&cfg, &m, &staging, &db).await;
    let _ = std::fs::remove_dir_all(&staging);
    r?;
    eprintln!(
        "backup {name:?} verified and installed in {:.1}s; rebuilding the indexes",
        started.elapsed().as_secs_f64()
    );
    crate::run::rebuild(cfg).await
}

async fn install(cfg: &Config, m: &Manifest, staging: &Path, db: &Path) -> Result<()> {
    if m.store != "sqlite" {
        bail!(
            Refused,
            "backup {:?} is of a {} store, not sqlite",
            m.name,
            m.store
        );
    }
    let file = staging.join("engram.db");
    let info = SqliteStore::inspect(&file)
        .await
        .with_context(|| format!("backup {:?} holds a damaged database", m.name))?;
    // The snapshot must be the one the manifest describes.
    let recorded = &m.meta["snapshot"];
    for (k, v) in [
        ("memories", info.memories),
        ("max_seq", info.max_seq),
        ("audit_events", info.audit_events),
    ] {
        if recorded[k].as_u64() != Some(v) {
            bail!(
                Refused,
                "backup {:?}: the database has {k} = {v}, the manifest recorded {}",
                m.name,
                recorded[k]
            );
        }
    }
    // Indexes of whatever was here before would not match the new store.
    let index = cfg.data_dir.join("index");
    if index.exists() {
        std::fs::remove_dir_all(&index)
            .with_context(|| format!("removing stale indexes in {}", index.display()))?;
    }
    // Durably: the database content, then its directory entry.
    engram_fs::install(&file, db)
        .with_context(|| format!("moving the restored database to {}", db.display()))?;
    Ok(())
}
