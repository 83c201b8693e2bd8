//! Contextual indexing: what the indexes see of a conversation message.
//!
//! A turn of a conversation rarely stands on its own: "I went yesterday, it
//! was so moving" answers "when did Caroline go to the support group?" only
//! with the turns around it and the session's date. The stored and returned
//! `text` stays the message itself; the *indexed representation* carries its
//! context:
//!
//! * keyword side: the text field holds `speaker: text`; a second field,
//!   `context`, holds the session date and the `window` live messages before
//!   and after it in the session. A query term scores in both, the context's
//!   BM25 weighted by [`KEYWORD_CONTEXT_WEIGHT`].
//!
//! The indexer builds both when it applies the change feed (the store hands
//! out rows, the engine decides what is indexed), and re-indexes the
//! neighbours of every message that arrives, changes or goes, so the index
//! ends where a rebuild would. The recipe is versioned ([`Recipe::id`]): an
//! index built with another recipe is rebuilt from the feed.
//!
//! Measured on the LoCoMo dev conversations (BENCHMARKS.md, "Retrieval"):
//! the keyword mode's evidence fraction@10 0.619 → 0.732 with a window of 2.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::error::Result;
use crate::traits::Embedder;
use crate::types::{ModelInfo, SessionRef};

/// Weight of a term's BM25 score in the context field relative to the text.
pub const KEYWORD_CONTEXT_WEIGHT: f32 = 0.8;

/// Version of the keyword representation's layout (bump on any change to
/// [`keyword_text`] or [`keyword_context`]).
pub const KEYWORD_RECIPE: u32 = 1;

/// Most messages on each side a context may take.
pub const MAX_WINDOW: usize = 8;

/// How a message's context is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// Live messages on each side of a message that go into its context.
    pub window: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe { window: 2 }
    }
}

impl Recipe {
    /// Identifies the keyword representation: an index records it and is
    /// rebuilt when it differs.
    pub fn id(&self) -> String {
        format!("{KEYWORD_RECIPE}w{}", self.window)
    }
}

/// One message of a session, as a context is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn<'a> {
    pub speaker: Option<&'a str>,
    pub text: &'a str,
}

impl Turn<'_> {
    fn push_to(&self, out: &mut String) {
        if !out.is_empty() {
            out.push('\n');
        }
        if let Some(s) = self.speaker {
            out.push_str(s);
            out.push_str(": ");
        }
        out.push_str(self.text);
    }
}

/// The keyword text of a memory: a message's speaker and text, or the text.
pub fn keyword_text(text: &str, session: Option<&SessionRef>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    Turn {
        speaker: session.and_then(|s| s.speaker.as_deref()),
        text,
    }
    .push_to(&mut out);
    out
}

/// What the embedder gets for a memory: the vector side's recipe.
///
/// A vector is only comparable with vectors made by the same model from
/// texts built the same way, so the recipe is part of the model version a
/// vector is recorded with ([`VectorRecipe::version`]): changing it is a
/// model change, and goes through the re-embedding machinery
/// (`[embedder.next]` with the other recipe; see [`crate::reembed`]) while
/// the old vectors keep serving. The checksum a vector is recorded with
/// covers the speaker too (see `crate::sessions::message_checksum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorRecipe {
    /// A message's speaker and text (`Caroline: I went yesterday`), any other
    /// memory's text. The speaker is the person questions name: on the
    /// LoCoMo dev conversations the vector mode's evidence fraction@10 is
    /// 0.30 on the bare text and 0.50 with the speaker.
    #[default]
    Speaker,
    /// The text alone, for every memory.
    Text,
}

impl VectorRecipe {
    /// The text a memory's vector is computed from.
    pub fn text(self, text: &str, speaker: Option<&str>) -> String {
        match (self, speaker) {
            (VectorRecipe::Speaker, Some(s)) => format!("{s}: {text}"),
            _ => text.to_string(),
        }
    }

    /// The model version recorded with vectors of this recipe: the
    /// embedder's own for the default recipe (so stores written before
    /// recipes had a name keep their version), `<version>+<recipe>` for any
    /// other.
    pub fn version(self, model_version: &str) -> String {
        match self {
            VectorRecipe::Speaker => model_version.to_string(),
            VectorRecipe::Text => format!("{model_version}+text"),
        }
    }
}

/// An embedder whose vectors are made with a recipe other than the default:
/// it embeds what it is given (the engine builds the texts with
/// [`Embedder::recipe`]) and reports the recipe in its model version.
struct WithRecipe {
    inner: Arc<dyn Embedder>,
    recipe: VectorRecipe,
    info: ModelInfo,
}

#[async_trait]
impl Embedder for WithRecipe {
    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn recipe(&self) -> VectorRecipe {
        self.recipe
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.inner.embed(texts).await
    }
}

/// `embedder` (a model's own, with the default recipe) making its vectors
/// with `recipe`; itself for the default recipe.
pub fn with_recipe(embedder: Arc<dyn Embedder>, recipe: VectorRecipe) -> Arc<dyn Embedder> {
    if recipe == embedder.recipe() {
        return embedder;
    }
    // Wrapping twice would name two recipes in one version.
    debug_assert_eq!(embedder.recipe(), VectorRecipe::default());
    let base = embedder.model();
    let info = ModelInfo {
        version: recipe.version(&base.version),
        ..base.clone()
    };
    Arc::new(WithRecipe {
        inner: embedder,
        recipe,
        info,
    })
}

/// The date a context names, as people write it in questions ("8 May 2023").
pub fn date_words(t: DateTime<Utc>) -> String {
    t.format("%-d %B %Y").to_string()
}

/// The keyword context of the message at `at` in `turns` (a session's live
/// messages in order, or a stretch of them): its date and the `window`
/// messages on each side.
pub fn keyword_context(
    occurred_at: DateTime<Utc>,
    turns: &[Turn<'_>],
    at: usize,
    window: usize,
) -> String {
    let mut out = date_words(occurred_at);
    let from = at.saturating_sub(window);
    let to = (at + window + 1).min(turns.len());
    for (i, t) in turns.iter().enumerate().take(to).skip(from) {
        if i != at {
            t.push_to(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns() -> Vec<Turn<'static>> {
        ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|t| Turn {
                speaker: Some("X"),
                text: t,
            })
            .collect()
    }

    #[test]
    fn the_context_is_the_date_and_the_neighbours_without_the_message() {
        let t: DateTime<Utc> = "2023-05-08T13:56:00Z".parse().unwrap();
        assert_eq!(keyword_context(t, &turns(), 2, 1), "8 May 2023\nX: b\nX: d");
        assert_eq!(keyword_context(t, &turns(), 0, 2), "8 May 2023\nX: b\nX: c");
        assert_eq!(
            keyword_context(t, &turns(), 4, 8),
            "8 May 2023\nX: a\nX: b\nX: c\nX: d"
        );
        assert_eq!(keyword_context(t, &turns(), 1, 0), "8 May 2023");
    }

    #[test]
    fn keyword_text_names_the_speaker() {
        let s = SessionRef {
            id: "s".into(),
            position: 1,
            speaker: Some("Caroline".into()),
        };
        assert_eq!(keyword_text("hi", Some(&s)), "Caroline: hi");
        assert_eq!(keyword_text("hi", None), "hi");
    }

    #[test]
    fn the_vector_recipe_decides_the_text_and_names_itself_in_the_version() {
        assert_eq!(VectorRecipe::Speaker.text("hi", Some("Ann")), "Ann: hi");
        assert_eq!(VectorRecipe::Speaker.text("hi", None), "hi");
        assert_eq!(VectorRecipe::Text.text("hi", Some("Ann")), "hi");
        assert_eq!(VectorRecipe::Speaker.version("sha256:ab"), "sha256:ab");
        assert_eq!(VectorRecipe::Text.version("sha256:ab"), "sha256:ab+text");
    }

    #[test]
    fn the_recipe_id_changes_with_the_window() {
        assert_ne!(Recipe { window: 1 }.id(), Recipe { window: 2 }.id());
    }
}
