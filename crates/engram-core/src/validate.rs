//! Input validation shared by the write paths: text, metadata, tags.

use crate::codes::Code;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::limits;
use crate::text;

impl Engine {
    pub(crate) fn validate_text(&self, t: &str) -> Result<String> {
        if t.len() > self.cfg.max_text_bytes {
            return Err(Error::TooLarge(format!(
                "text is {} bytes; the limit is {}",
                t.len(),
                self.cfg.max_text_bytes
            )));
        }
        limits::check_string("text", t, self.cfg.max_text_bytes)?;
        let n = text::normalize(t);
        if n.is_empty() {
            return Err(Error::bad(Code::InvalidText, "text must not be empty"));
        }
        Ok(t.trim().to_string())
    }

    pub(crate) fn validate_metadata(
        &self,
        m: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.cfg.max_metadata_bytes {
            return Err(Error::TooLarge(format!(
                "metadata is {size} bytes; the limit is {}",
                self.cfg.max_metadata_bytes
            )));
        }
        if let Some(k) = m.keys().find(|k| k.is_empty() || k.contains('.')) {
            return Err(Error::bad(
                Code::InvalidMetadata,
                format!("metadata key {k:?} is invalid: keys must be non-empty and contain no '.'"),
            ));
        }
        m.iter().try_for_each(|(k, v)| {
            limits::check_string("metadata key", k, self.cfg.max_metadata_bytes)?;
            limits::check_json("metadata", v, 1)
        })
    }

    pub(crate) fn validate_tags(&self, tags: Vec<String>) -> Result<Vec<String>> {
        if tags.len() > self.cfg.max_tags {
            return Err(Error::TooLarge(format!(
                "{} tags; the limit is {}",
                tags.len(),
                self.cfg.max_tags
            )));
        }
        let mut out: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                return Err(Error::bad(
                    Code::InvalidTag,
                    format!("tag {t:?} is invalid: 1 to 128 bytes, no control characters"),
                ));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }
}
