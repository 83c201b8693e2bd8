//! `engram smoke`: streamed chats per model against the LLM server, with
//! first-token and total latency and tokens per second (for nightly runs
//! and after a model change).

use engram_core::rag::{ChatMessage, ChatRequest};
use engram_core::Llm;
use futures::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

const SMOKE_PROMPT: &str = "In one short sentence: why do AI agents need long-term memory?";

/// One streamed chat of a smoke run.
#[derive(Debug, Serialize)]
pub struct Sample {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    pub total_ms: f64,
    /// Text deltas streamed (one per token on llama.cpp, vLLM and Ollama).
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelSmoke {
    pub model: String,
    pub runs: usize,
    pub ok: usize,
    pub failed: usize,
    /// Over the runs that succeeded; `null` when none did.
    pub first_token_ms: Option<Spread>,
    pub total_ms: Option<Spread>,
    /// Tokens streamed per second of whole requests, over the runs that succeeded.
    pub tokens_per_s: Option<f64>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct SmokeReport {
    pub ok: bool,
    pub base_url: String,
    pub runs: usize,
    pub max_tokens: u32,
    pub models: Vec<ModelSmoke>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Median (lower of the two middle values) and maximum.
fn spread(mut v: Vec<f64>) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Spread {
        p50: v[(v.len() - 1) / 2],
        max: v[v.len() - 1],
    })
}

async fn smoke_once(llm: &dyn Llm, max_tokens: u32, run: usize) -> Sample {
    let started = Instant::now();
    // Each run's prompt differs, so no run is served from the previous one's
    // prompt cache: first-token latency includes prompt processing.
    let req = ChatRequest {
        messages: vec![ChatMessage::new(
            "user",
            format!(
                "{SMOKE_PROMPT} (run {run} at {})",
                chrono::Utc::now().timestamp_millis()
            ),
        )],
        max_tokens,
        temperature: 0.0,
    };
    let fail = |error: String, tokens: usize, first: Option<Duration>| Sample {
        ok: false,
        first_token_ms: first.map(ms),
        total_ms: ms(started.elapsed()),
        tokens,
        error: Some(error),
    };
    let mut stream = match llm.chat(req).await {
        Ok(s) => s,
        Err(e) => return fail(e.to_string(), 0, None),
    };
    let (mut first, mut tokens) = (None, 0usize);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {
                first.get_or_insert_with(|| started.elapsed());
                tokens += 1;
            }
            Err(e) => return fail(e.to_string(), tokens, first),
        }
    }
    if tokens == 0 {
        return fail("the model streamed no token".into(), 0, None);
    }
    Sample {
        ok: true,
        first_token_ms: first.map(ms),
        total_ms: ms(started.elapsed()),
        tokens,
        error: None,
    }
}

/// `runs` streamed chats of at most `max_tokens` with one model, one at a
/// time; `on_error` hears of each failed run as it happens.
pub async fn smoke_model(
    llm: &dyn Llm,
    model: &str,
    runs: usize,
    max_tokens: u32,
    mut on_error: impl FnMut(usize, &str),
) -> ModelSmoke {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let s = smoke_once(llm, max_tokens, i + 1).await;
        if let Some(e) = &s.error {
            on_error(i + 1, e);
        }
        samples.push(s);
    }
    let good: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let secs: f64 = good.iter().map(|s| s.total_ms).sum::<f64>() / 1000.0;
    let tokens: usize = good.iter().map(|s| s.tokens).sum();
    ModelSmoke {
        model: model.to_string(),
        runs,
        ok: good.len(),
        failed: runs - good.len(),
        first_token_ms: spread(good.iter().filter_map(|s| s.first_token_ms).collect()),
        total_ms: spread(good.iter().map(|s| s.total_ms).collect()),
        tokens_per_s: (secs > 0.0).then(|| (tokens as f64 / secs * 10.0).round() / 10.0),
        samples,
    }
}

/// The report as a plain-text table, one row per model.
pub fn table(r: &SmokeReport) -> String {
    let header = [
        "model",
        "ok",
        "failed",
        "first p50 ms",
        "first max ms",
        "total p50 ms",
        "total max ms",
        "tokens/s",
    ];
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let rows: Vec<[String; 8]> = r
        .models
        .iter()
        .map(|m| {
            [
                m.model.clone(),
                m.ok.to_string(),
                m.failed.to_string(),
                num(m.first_token_ms.as_ref().map(|s| s.p50)),
                num(m.first_token_ms.as_ref().map(|s| s.max)),
                num(m.total_ms.as_ref().map(|s| s.p50)),
                num(m.total_ms.as_ref().map(|s| s.max)),
                num(m.tokens_per_s),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = format!(
        "{} runs per model, at most {} tokens each, against {}\n",
        r.runs, r.max_tokens, r.base_url
    );
    s.push_str(&line(header.to_vec()));
    for row in &rows {
        s.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_lower_median_and_max() {
        assert!(spread(vec![]).is_none());
        let s = spread(vec![30.0, 10.0, 20.0]).unwrap();
        assert_eq!((s.p50, s.max), (20.0, 30.0));
        let s = spread(vec![40.0, 10.0]).unwrap();
        assert_eq!((s.p50, s.max), (10.0, 40.0));
    }

    #[test]
    fn table_has_a_row_per_model() {
        let r = SmokeReport {
            ok: false,
            base_url: "http://h/v1".into(),
            runs: 2,
            max_tokens: 16,
            models: vec![
                ModelSmoke {
                    model: "a-long-model-name:7b".into(),
                    runs: 2,
                    ok: 2,
                    failed: 0,
                    first_token_ms: spread(vec![12.0, 30.0]),
                    total_ms: spread(vec![100.0, 140.0]),
                    tokens_per_s: Some(80.5),
                    samples: vec![],
                },
                ModelSmoke {
                    model: "b:1".into(),
                    runs: 2,
                    ok: 0,
                    failed: 2,
                    first_token_ms: None,
                    total_ms: None,
                    tokens_per_s: None,
                    samples: vec![],
                },
            ],
        };
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("model "), "{t}");
        assert!(lines[2].starts_with("a-long-model-name:7b  "), "{t}");
        assert!(lines[2].ends_with("80.5"), "{t}");
        assert!(lines[3].starts_with("b:1 "), "{t}");
        assert!(lines[3].ends_with('-'), "{t}");
    }
}
