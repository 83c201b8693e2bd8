//! engram-backup: checksummed backups in an object store — a local directory
//! or an S3 bucket (AWS, MinIO, s3s, …) through `object_store`.
//!
//! A backup is a folder `<prefix>/<name>/` holding the snapshot's files, then
//! `manifest.json` (engram version, store kind, caller metadata, and each
//! file's size and SHA-256), then `manifest.sha256` (the manifest's own
//! SHA-256). The two manifest objects are written last, so a backup whose
//! upload was cut short has no `manifest.sha256` and is never listed or
//! restored.
//!
//! Restoring verifies before it trusts: the manifest against its checksum,
//! then every file, byte for byte, while it is downloaded into a staging
//! folder. Any mismatch — a flipped bit, a truncated or missing file, an
//! extra one in the manifest's place — is [`BackupError::Corrupt`] and
//! nothing is handed to the caller.
//!
//! The crate knows nothing of engram's stores: the caller produces the
//! snapshot files (e.g. SQLite's `VACUUM INTO`) and installs what was restored.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The manifest format this version writes and understands.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const MANIFEST_SUM: &str = "manifest.sha256";
/// Upload part size (S3's minimum is 5 MiB).
const PART: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No complete backup of that name.
    #[error("backup {0:?} not found")]
    NotFound(String),
    /// The backup exists but does not match its manifest.
    #[error("backup {name:?} is corrupt: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("invalid backup request: {0}")]
    Invalid(String),
    /// The object store failed (unreachable, denied, …).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where backups live.
#[derive(Clone)]
pub enum Target {
    /// A local (or mounted) directory.
    Dir(PathBuf),
    S3(S3Target),
}

#[derive(Clone)]
pub struct S3Target {
    /// `http://127.0.0.1:9000` for MinIO/s3s; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (a private network's MinIO).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative name inside the backup (no `/`).
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub engram_version: String,
    /// Which store the snapshot is of (`sqlite`).
    pub store: String,
    /// Whatever the caller records: counts, change seq, schema, model.
    pub meta: serde_json::Value,
    pub files: Vec<FileEntry>,
}

/// What [`Backups::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Complete backups whose manifest checks out, oldest first.
    pub backups: Vec<Manifest>,
    /// Backups whose manifest is damaged (they cannot be restored).
    pub damaged: Vec<Damaged>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Damaged {
    pub name: String,
    pub reason: String,
}

/// Backups under one prefix of one object store.
pub struct Backups {
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// Human-readable location, for messages.
    location: String,
    /// Bytes of backup files moved by the current `create`, `download` or
    /// `verify` (reset at its start), for progress reports.
    moved: tokio::sync::watch::Sender<u64>,
}

impl Backups {
    /// Open the target; the directory is created if needed. Nothing is read
    /// yet (an unreachable S3 fails on first use).
    pub fn open(target: &Target, prefix: &str) -> Result<Backups> {
        let (store, location): (Arc<dyn ObjectStore>, String) = match target {
            Target::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let s = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
                (Arc::new(s), dir.display().to_string())
            }
            Target::S3(t) => {
                // HTTPS to S3 goes through rustls without a built-in crypto
                // provider (aws-lc needs cmake): use ring, unless the process
                // already chose one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&t.bucket)
                    .with_region(&t.region)
                    .with_allow_http(t.allow_http)
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(300))
                            .with_allow_http(t.allow_http),
                    )
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..Default::default()
                    });
                if let Some(e) = &t.endpoint {
                    // Path-style requests: MinIO and friends do not do
                    // bucket subdomains.
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                }
                if let Some(k) = &t.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &t.secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let loc = format!("s3://{}/{}", t.bucket, prefix.trim_matches('/'));
                (Arc::new(b.build()?), loc)
            }
        };
        Ok(Backups {
            store,
            prefix: ObjPath::from(prefix.trim_matches('/')),
            location,
            moved: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Where these backups are, e.g. `s3://bucket/backups`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Bytes of backup files uploaded (by [`create`](Self::create)) or
    /// downloaded and checked (by [`download`](Self::download) and
    /// [`verify`](Self::verify)) so far in the current operation.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    fn moved(&self, n: usize) {
        self.moved.send_modify(|b| *b += n as u64);
    }

    fn path(&self, name: &str, file: &str) -> ObjPath {
        self.prefix.clone().join(name).join(file)
    }

    /// Upload `files` (name inside the backup, local path) as backup `name`,
    /// then its manifest. Fails if a complete backup of that name exists.
    pub async fn create(
        &self,
        name: &str,
        store_kind: &str,
        meta: serde_json::Value,
        files: &[(String, PathBuf)],
    ) -> Result<Manifest> {
        check_name(name)?;
        if files.is_empty() {
            return Err(BackupError::Invalid(
                "a backup needs at least one file".into(),
            ));
        }
        for (f, _) in files {
            check_name(f)?;
            if f == MANIFEST || f == MANIFEST_SUM {
                return Err(BackupError::Invalid(format!("{f:?} is reserved")));
            }
        }
        if self.exists(name).await? {
            return Err(BackupError::Invalid(format!(
                "a backup named {name:?} already exists in {}",
                self.location
            )));
        }
        self.moved.send_replace(0);
        let mut entries = Vec::new();
        for (f, local) in files {
            let (bytes, sha256) = self.upload(local, &self.path(name, f)).await?;
            entries.push(FileEntry {
                name: f.clone(),
                bytes,
                sha256,
            });
        }
        let manifest = Manifest {
            format: FORMAT,
            name: name.to_string(),
            created_at: Utc::now(),
            engram_version: env!("CARGO_PKG_VERSION").to_string(),
            store: store_kind.to_string(),
            meta,
            files: entries,
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        let sum = hex::encode(Sha256::digest(&body));
        self.store
            .put(&self.path(name, MANIFEST), PutPayload::from(body))
            .await?;
        // Last: its presence marks the backup complete.
        self.store
            .put(
                &self.path(name, MANIFEST_SUM),
                PutPayload::from(format!("{sum}  {MANIFEST}\n")),
            )
            .await?;
        Ok(manifest)
    }

    async fn upload(&self, local: &Path, to: &ObjPath) -> Result<(u64, String)> {
        let mut file = tokio::fs::File::open(local).await.map_err(io(local))?;
        let mut w =
            object_store::buffered::BufWriter::with_capacity(self.store.clone(), to.clone(), PART);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(io(local))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
            if let Err(e) = w.write_all(&buf[..n]).await {
                let _ = w.abort().await;
                return Err(store_io(e));
            }
            self.moved(n);
        }
        w.shutdown().await.map_err(store_io)?;
        Ok((total, hex::encode(hasher.finalize())))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        match self.store.head(&self.path(name, MANIFEST_SUM)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The manifest of a complete backup, checked against its checksum.
    pub async fn manifest(&self, name: &str) -> Result<Manifest> {
        check_name(name)?;
        let sum = match self.store.get(&self.path(name, MANIFEST_SUM)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::NotFound(name.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| BackupError::Corrupt {
            name: name.to_string(),
            reason,
        };
        let want = String::from_utf8_lossy(&sum)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let body = match self.store.get(&self.path(name, MANIFEST)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(corrupt("manifest.json is missing".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let got = hex::encode(Sha256::digest(&body));
        if got != want {
            return Err(corrupt(format!(
                "manifest.json has SHA-256 {got}, manifest.sha256 says {want}"
            )));
        }
        let m: Manifest = serde_json::from_slice(&body)
            .map_err(|e| corrupt(format!("manifest.json is not a manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "backup {name:?} has format {}; this engram reads format {FORMAT}",
                m.format
            )));
        }
        if m.name != name {
            return Err(corrupt(format!("manifest names backup {:?}", m.name)));
        }
        for f in &m.files {
            check_name(&f.name).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(m)
    }

    /// Complete backups, oldest first, and apart the damaged ones (a bad
    /// manifest must not hide the good backups next to it).
    pub async fn list(&self) -> Result<Listing> {
        let listing = self.store.list_with_delimiter(Some(&self.prefix)).await?;
        let mut out = Listing::default();
        for p in listing.common_prefixes {
            let Some(name) = p.filename() else { continue };
            match self.manifest(name).await {
                Ok(m) => out.backups.push(m),
                Err(BackupError::NotFound(_)) => {} // incomplete upload
                Err(e @ (BackupError::Corrupt { .. } | BackupError::Invalid(_))) => {
                    out.damaged.push(Damaged {
                        name: name.to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        out.backups.sort_by_key(|m| m.created_at);
        Ok(out)
    }

    /// Download backup `name` into the new directory `into`, verifying every
    /// file against the manifest. On any error `into` is removed.
    pub async fn download(&self, name: &str, into: &Path) -> Result<Manifest> {
        let m = self.manifest(name).await?;
        if into.exists() {
            return Err(BackupError::Invalid(format!(
                "{} already exists",
                into.display()
            )));
        }
        tokio::fs::create_dir_all(into).await.map_err(io(into))?;
        self.moved.send_replace(0);
        let r = self.fetch_all(&m, into).await;
        if r.is_err() {
            let _ = tokio::fs::remove_dir_all(into).await;
        }
        r.map(|_| m)
    }

    /// Check every file of backup `name` without keeping it.
    pub async fn verify(&self, name: &str) -> Result<Manifest> {
        let m = self.manifest(name).await?;
        self.moved.send_replace(0);
        for f in &m.files {
            self.fetch(&m, f, None).await?;
        }
        Ok(m)
    }

    async fn fetch_all(&self, m: &Manifest, into: &Path) -> Result<()> {
        for f in &m.files {
            self.fetch(m, f, Some(&into.join(&f.name))).await?;
        }
        Ok(())
    }

    /// Stream one file, hashing it, into `to` (or nowhere).
    async fn fetch(&self, m: &Manifest, f: &FileEntry, to: Option<&Path>) -> Result<()> {
        let corrupt = |reason: String| BackupError::Corrupt {
            name: m.name.clone(),
            reason,
        };
        let mut stream = match self.store.get(&self.path(&m.name, &f.name)).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(corrupt(format!("{} is missing", f.name)))
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = match to {
            Some(p) => Some(tokio::fs::File::create(p).await.map_err(io(p))?),
            None => None,
        };
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            let chunk: Bytes = chunk;
            hasher.update(&chunk);
            total += chunk.len() as u64;
            if total > f.bytes {
                return Err(corrupt(format!(
                    "{} is longer than its {} bytes",
                    f.name, f.bytes
                )));
            }
            if let (Some(o), Some(p)) = (out.as_mut(), to) {
                o.write_all(&chunk).await.map_err(io(p))?;
            }
            self.moved(chunk.len());
        }
        if total != f.bytes {
            return Err(corrupt(format!(
                "{} has {total} bytes, the manifest says {}",
                f.name, f.bytes
            )));
        }
        let got = hex::encode(hasher.finalize());
        if got != f.sha256 {
            return Err(corrupt(format!(
                "{} has SHA-256 {got}, the manifest says {}",
                f.name, f.sha256
            )));
        }
        if let (Some(mut o), Some(p)) = (out, to) {
            o.flush().await.map_err(io(p))?;
            o.sync_all().await.map_err(io(p))?;
        }
        Ok(())
    }

    /// Delete backup `name`, damaged or not: the manifest checksum first (so
    /// a half-deleted backup is no longer listed), then every object under it.
    pub async fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let folder = self.prefix.clone().join(name);
        let mut objects: Vec<ObjPath> = self
            .store
            .list(Some(&folder))
            .map_ok(|o| o.location)
            .try_collect()
            .await?;
        if objects.is_empty() {
            return Err(BackupError::NotFound(name.to_string()));
        }
        let sum = self.path(name, MANIFEST_SUM);
        objects.sort_by_key(|p| *p != sum);
        for o in objects {
            match self.store.delete(&o).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Object store errors surface through `BufWriter` as `io::Error`.
fn store_io(e: std::io::Error) -> BackupError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<object_store::Error>() {
            Ok(os) => BackupError::Store(*os),
            Err(other) => BackupError::Io {
                path: PathBuf::from("<upload>"),
                source: std::io::Error::other(other),
            },
        },
        None => BackupError::Io {
            path: PathBuf::from("<upload>"),
            source: std::io::Error::other("upload failed"),
        },
    }
}

/// Names are one path segment of letters, digits, `.`, `-`, `_`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "{name:?} is not a valid name (letters, digits, '.', '-', '_'; not starting with '.')"
        )))
    }
}

/// A default backup name: `engram-20261124T010203Z`.
pub fn default_name(now: DateTime<Utc>) -> String {
    format!("engram-{}", now.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_segments() {
        for ok in ["engram-20261124T010203Z", "a", "db.sqlite", "x_y-1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "é",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
