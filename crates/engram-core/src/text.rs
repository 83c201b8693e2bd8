//! Text normalisation and content checksums.

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// NFC, trimmed, with every run of whitespace collapsed to one space. Two
/// texts that normalise equally are the same memory content.
pub fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    let mut out = String::with_capacity(nfc.len());
    for word in nfc.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// sha256 over the namespace and the normalised text, hex encoded.
pub fn checksum(namespace: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update([0u8]);
    h.update(normalize(text).as_bytes());
    hex::encode(h.finalize())
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Longest job error message a store keeps, in bytes.
pub const MAX_JOB_ERROR_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_unicode_forms_do_not_change_the_checksum() {
        assert_eq!(normalize("  a\t b \n\n c "), "a b c");
        // "é" precomposed vs e + combining acute.
        assert_eq!(checksum("ns", "caf\u{e9}"), checksum("ns", "cafe\u{301}"));
        assert_eq!(checksum("ns", "a  b"), checksum("ns", " a b\n"));
    }

    #[test]
    fn namespace_and_case_matter() {
        assert_ne!(checksum("a", "x"), checksum("b", "x"));
        assert_ne!(checksum("a", "X"), checksum("a", "x"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(checksum("ab", "c"), checksum("a", "bc"));
    }

    #[test]
    fn truncate_bytes_cuts_at_a_char_boundary() {
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("abc", 10), "abc");
        assert_eq!(truncate_bytes("", 0), "");
    }
}
