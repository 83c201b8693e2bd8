//! Backups against a local directory and a real S3 server (s3s-fs, started by
//! `scripts/services.sh start s3`): round trips, listing, and refusal of every
//! kind of damage.

use engram_backup::{BackupError, Backups, S3Target, Target};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn s3_target() -> S3Target {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    S3Target {
        endpoint: Some(env("ENGRAM_TEST_S3_ENDPOINT", "http://127.0.0.1:19000")),
        region: "us-east-1".into(),
        bucket: env("ENGRAM_TEST_S3_BUCKET", "engram"),
        access_key_id: Some(env("ENGRAM_TEST_S3_ACCESS_KEY", "engram")),
        secret_access_key: Some(env("ENGRAM_TEST_S3_SECRET_KEY", "engram-secret-key")),
        allow_http: true,
    }
}

/// A fresh prefix per test, so runs never see each other's backups.
fn prefix(test: &str) -> String {
    format!("test/{test}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{n:x}-{}", std::process::id())
}

/// Both kinds of target: (label, backups, raw store to damage objects with).
async fn targets(
    test: &str,
    dir: &Path,
) -> Vec<(&'static str, Backups, Arc<dyn ObjectStore>, String)> {
    let p = prefix(test);
    let local = Backups::open(&Target::Dir(dir.join("backups")), &p).unwrap();
    let raw_local: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.join("backups")).unwrap(),
    );
    let t = s3_target();
    let s3 = Backups::open(&Target::S3(t.clone()), &p).unwrap();
    if let Err(e) = s3.list().await {
        panic!(
            "no S3 server at {:?} ({e}); start it with `scripts/services.sh start s3`",
            t.endpoint
        );
    }
    let raw_s3: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(t.endpoint.clone().unwrap())
            .with_bucket_name(&t.bucket)
            .with_region(&t.region)
            .with_access_key_id(t.access_key_id.clone().unwrap())
            .with_secret_access_key(t.secret_access_key.clone().unwrap())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    );
    vec![("dir", local, raw_local, p.clone()), ("s3", s3, raw_s3, p)]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Deterministic pseudo-random bytes (xorshift), large enough for multipart.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn round_trip_list_verify_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let big = noise(20 * 1024 * 1024 + 123, 7); // three upload parts
    let small = b"hello backup".to_vec();
    let files = vec![
        ("engram.db".to_string(), write(tmp.path(), "db", &big)),
        ("notes.txt".to_string(), write(tmp.path(), "notes", &small)),
    ];
    let total = (big.len() + small.len()) as u64;
    for (label, b, _, _) in targets("roundtrip", tmp.path()).await {
        assert!(b.list().await.unwrap().backups.is_empty(), "{label}");
        let progress = b.progress();
        let m = b
            .create("b1", "sqlite", serde_json::json!({"memories": 3}), &files)
            .await
            .unwrap();
        // Progress counts every byte once per operation.
        assert_eq!(*progress.borrow(), total, "{label}: uploaded");
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[0].bytes, big.len() as u64);
        // A name is used once.
        let e = b
            .create("b1", "sqlite", serde_json::json!({}), &files)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::Invalid(_)), "{label}: {e}");

        let listed = b.list().await.unwrap().backups;
        assert_eq!(listed.len(), 1, "{label}");
        assert_eq!(listed[0].meta["memories"], 3);
        b.verify("b1").await.unwrap();
        assert_eq!(*progress.borrow(), total, "{label}: verified");

        let out = tmp.path().join(format!("restored-{label}"));
        let got = b.download("b1", &out).await.unwrap();
        assert_eq!(*progress.borrow(), total, "{label}: downloaded");
        assert_eq!(got.files, m.files);
        assert_eq!(
            std::fs::read(out.join("engram.db")).unwrap(),
            big,
            "{label}"
        );
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), small);
        // Never into an existing folder.
        let e = b.download("b1", &out).await.unwrap_err();
        assert!(matches!(e, BackupError::Invalid(_)), "{label}: {e}");

        b.delete("b1").await.unwrap();
        assert!(b.list().await.unwrap().backups.is_empty());
        assert!(matches!(
            b.delete("b1").await,
            Err(BackupError::NotFound(_))
        ));
        assert!(matches!(
            b.verify("b1").await,
            Err(BackupError::NotFound(_))
        ));
    }
}

/// New content for an object, or `None` to delete it.
type Damage = Box<dyn Fn() -> Option<Vec<u8>>>;

#[tokio::test]
async fn every_kind_of_damage_is_refused_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(300_000, 3);
    let files = vec![
        ("engram.db".to_string(), write(tmp.path(), "db", &data)),
        (
            "extra.bin".to_string(),
            write(tmp.path(), "extra", b"0123456789"),
        ),
    ];
    for (label, b, raw, prefix) in targets("damage", tmp.path()).await {
        let obj = |name: &str, file: &str| {
            object_store::path::Path::from(format!("{prefix}/{name}/{file}"))
        };
        // (backup name, what is done to it, expected error)
        let mut flipped = data.clone();
        flipped[150_000] ^= 0x01;
        let cases: Vec<(&str, Damage, &str)> = vec![
            ("flip", Box::new(move || Some(flipped.clone())), "engram.db"),
            (
                "trunc",
                Box::new({
                    let d = data.clone();
                    move || Some(d[..d.len() - 1].to_vec())
                }),
                "engram.db",
            ),
            (
                "longer",
                Box::new({
                    let d = data.clone();
                    move || {
                        let mut v = d.clone();
                        v.push(0);
                        Some(v)
                    }
                }),
                "engram.db",
            ),
            ("gone", Box::new(|| None), "extra.bin"),
            (
                "manifest",
                Box::new(|| Some(b"{\"format\":1}".to_vec())),
                "manifest.json",
            ),
        ];
        for (name, damage, target_file) in cases {
            b.create(name, "sqlite", serde_json::json!({}), &files)
                .await
                .unwrap();
            match damage() {
                Some(bytes) => {
                    raw.put(&obj(name, target_file), PutPayload::from(bytes))
                        .await
                        .unwrap();
                }
                None => raw.delete(&obj(name, target_file)).await.unwrap(),
            }
            let out = tmp.path().join(format!("out-{label}-{name}"));
            let e = b.download(name, &out).await.unwrap_err();
            assert!(
                matches!(e, BackupError::Corrupt { .. }),
                "{label}/{name}: {e}"
            );
            assert!(
                !out.exists(),
                "{label}/{name}: a refused restore leaves no folder"
            );
            assert!(matches!(
                b.verify(name).await,
                Err(BackupError::Corrupt { .. })
            ));
        }

        // An upload cut short (no manifest checksum) is not a backup.
        b.create("cut", "sqlite", serde_json::json!({}), &files)
            .await
            .unwrap();
        raw.delete(&obj("cut", "manifest.sha256")).await.unwrap();
        assert!(matches!(
            b.verify("cut").await,
            Err(BackupError::NotFound(_))
        ));
        // Listing still works with damaged backups around: the good one is
        // listed, the damaged manifest is reported, the cut one is neither.
        b.create("good", "sqlite", serde_json::json!({}), &files)
            .await
            .unwrap();
        let l = b.list().await.unwrap();
        let names: Vec<&str> = l.backups.iter().map(|m| m.name.as_str()).collect();
        assert!(names.contains(&"good"), "{label}: {names:?}");
        assert!(!names.contains(&"cut"), "{label}: {names:?}");
        let damaged: Vec<&str> = l.damaged.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(damaged, ["manifest"], "{label}");
        // A damaged backup can be deleted.
        b.delete("manifest").await.unwrap();
        assert!(b.list().await.unwrap().damaged.is_empty(), "{label}");
    }
}

#[tokio::test]
async fn bad_names_and_unreachable_s3_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Backups::open(&Target::Dir(tmp.path().join("b")), "x").unwrap();
    let f = vec![("../escape".to_string(), write(tmp.path(), "f", b"x"))];
    assert!(matches!(
        b.create("ok", "sqlite", serde_json::json!({}), &f).await,
        Err(BackupError::Invalid(_))
    ));
    assert!(matches!(
        b.create("a/b", "sqlite", serde_json::json!({}), &[]).await,
        Err(BackupError::Invalid(_))
    ));
    let missing = vec![("db".to_string(), tmp.path().join("nope"))];
    assert!(matches!(
        b.create("m", "sqlite", serde_json::json!({}), &missing)
            .await,
        Err(BackupError::Io { .. })
    ));

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let down = Backups::open(
        &Target::S3(S3Target {
            endpoint: Some(endpoint),
            ..s3_target()
        }),
        "x",
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(down.list().await, Err(BackupError::Store(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
}
