//! Measure embedding throughput on short sentences.
//!
//! `ENGRAM_MODEL_DIR=... cargo run --release -p engram-embed --example throughput [N] [BATCH]`

use std::time::Instant;

use engram_embed::{EmbedOptions, LocalEmbedder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("ENGRAM_MODEL_DIR").ok_or("set ENGRAM_MODEL_DIR")?;
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let batch: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(engram_embed::DEFAULT_BATCH_SIZE);

    let start = Instant::now();
    let embedder = LocalEmbedder::load(dir.as_ref())?.with_options(EmbedOptions {
        batch_size: batch,
        ..EmbedOptions::default()
    });
    println!("load: {:.2?}", start.elapsed());

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
    let texts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{} {} {} ({i}).",
                subjects[i % 5],
                verbs[(i / 5) % 5],
                objects[(i / 25) % 4]
            )
        })
        .collect();

    embedder.embed_blocking(&texts[..texts.len().min(16)])?;
    for _ in 0..3 {
        let start = Instant::now();
        let out = embedder.embed_blocking(&texts)?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out.len(), n);
        println!(
            "{n} sentences, batch {batch}: {:.3} s, {:.1} sentences/s",
            secs,
            n as f64 / secs
        );
    }
    Ok(())
}
