//! PII detection and redaction.
//!
//! A memory's text may contain personal data. This module locates the kinds
//! it can find reliably — e-mail addresses, phone numbers and payment-card
//! numbers — and produces the text a caller without the `pii:read`
//! permission is allowed to see.
//!
//! # Detection rules
//!
//! Agents' memories are full of numbers (dates, times, versions, IDs, counts,
//! amounts, addresses), so the rules favour precision: a match must look like
//! the real thing *and* stand on its own.
//!
//! "Standing on its own" (used for phones and cards) means the character just
//! before and just after the match is not an ASCII letter, digit or `_`, and
//! is not one of `.` `-` `/` that is itself glued to an ASCII letter or digit
//! (so `1.555.123.4567.8`, `ID-555-123-4567` and `0.4111111111111111` are not
//! matches). Characters that belong to a match already found (and the
//! placeholders written by [`redact`]) count as separators. Non-ASCII text,
//! e.g. CJK, may touch a match directly.
//!
//! * **Email** — a practical RFC 5322 subset: a local part of ASCII letters,
//!   digits and `._%+-`, plus Latin, Greek and Cyrillic letters (leading dots
//!   are not part of the match; CJK text may touch an address), `@`, one or
//!   more dot-separated domain labels (letters, digits, inner hyphens), and a
//!   top-level domain of at least two letters (or an `xn--` IDN label).
//!   Image names such as `icon@2x.png` are not addresses.
//! * **Card** — 13 to 19 digits, either contiguous or in groups separated by
//!   single spaces or single dashes (one kind of separator per number; the
//!   first group has 4 digits, inner groups 3–6, the last 1–6), starting with
//!   a major-industry digit 2–6 (Mastercard 2-series, Amex, Diners, JCB, Visa,
//!   Mastercard, Discover, UnionPay, Maestro), passing the Luhn check, and not
//!   part of a longer digit run. The 2–6 rule keeps out millisecond
//!   timestamps and similar IDs, which start with 1.
//! * **Phone** — either international, `+` followed by 7 to 15 digits with
//!   single spaces, dashes or dots between groups and optional parenthesised
//!   groups (`+1 (555) 123-4567`, `+44 (0) 20 7946 0958`, `+14155552671`);
//!   or North-American, `(555) 123-4567`, `(555)123-4567`, `555-123-4567`,
//!   `555.123.4567`, optionally preceded by `1-`/`1 `/`1.`. Unformatted
//!   national numbers (`5551234567`), space-separated ones (`555 123 4567`)
//!   and 7-digit local numbers (`555-1234`) are *not* matched: they cannot be
//!   told apart from IDs, ranges and counts. A `+` number is cut before a
//!   space-separated group that would take it past 15 digits, and rejected if
//!   it looks like a signed decimal (`+12345.67`) or a date (`+2024-05-01`).
//!   Dates, times, versions, IP addresses, UUIDs, plain integers and amounts
//!   never match.
//!
//! Matches never overlap. When candidates collide, e-mail wins over card and
//! card wins over phone. Only ASCII digits are recognised.
//!
//! # Redaction
//!
//! [`redact`] replaces every located span by `[EMAIL]`, `[PHONE]` or `[CARD]`,
//! whatever the flags say. If the memory's flags name a kind that cannot be
//! located in the text (`Name`, `Custom`, or a detectable kind the detector
//! did not find), the whole text becomes `[REDACTED]`: we cannot tell where
//! the data is, so everything is hidden.
//!
//! Redaction is idempotent: `redact(redact(t, f), f) == redact(t, f)`. For
//! that, a placeholder already present in the text (e.g. `[EMAIL]`, from an
//! earlier redaction) counts as a located occurrence of its kind, and
//! replacement is repeated until the detector finds nothing more (a
//! replacement can turn a rejected neighbour into a stand-alone match).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// What the whole text becomes when a flagged kind cannot be located.
pub const REDACTED: &str = "[REDACTED]";

/// Kinds of personal data a memory can be flagged with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Name,
    Custom,
}

impl PiiKind {
    /// Every kind, in order.
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::Name,
        PiiKind::Custom,
    ];

    /// The snake_case name, as used by serde.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Name => "name",
            PiiKind::Custom => "custom",
        }
    }

    /// The inverse of [`PiiKind::as_str`]; ASCII case and surrounding
    /// whitespace are ignored.
    pub fn parse(s: &str) -> Option<PiiKind> {
        let s = s.trim();
        PiiKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether [`find`] can locate this kind in a text.
    pub fn is_locatable(self) -> bool {
        matches!(self, PiiKind::Email | PiiKind::Phone | PiiKind::Card)
    }

    /// What a located span of this kind is replaced with.
    fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Card => "[CARD]",
            PiiKind::Name | PiiKind::Custom => REDACTED,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detected span (byte offsets into the text, on char boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PiiSpan {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

impl PiiSpan {
    /// `start..end`, for slicing the text.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

/// Every email, phone number and payment-card number in `text`, sorted by
/// start, non-overlapping.
pub fn find(text: &str) -> Vec<PiiSpan> {
    let mut occupied = Occupied::default();
    let mut spans = Vec::new();

    for (start, end) in find_emails(text) {
        occupied.insert(start, end);
        spans.push(PiiSpan {
            kind: PiiKind::Email,
            start,
            end,
        });
    }

    let cards = find_cards(text, &occupied);
    for (start, end) in cards {
        if !occupied.overlaps(start, end) {
            occupied.insert(start, end);
            spans.push(PiiSpan {
                kind: PiiKind::Card,
                start,
                end,
            });
        }
    }

    let intl = find_intl_phones(text, &occupied);
    for (start, end) in intl {
        if !occupied.overlaps(start, end) {
            occupied.insert(start, end);
            spans.push(PiiSpan {
                kind: PiiKind::Phone,
                start,
                end,
            });
        }
    }
    for (start, end) in find_na_phones(text, &occupied) {
        occupied.insert(start, end);
        spans.push(PiiSpan {
            kind: PiiKind::Phone,
            start,
            end,
        });
    }

    spans.sort_by_key(|s| s.start);
    spans
}

/// The distinct kinds [`find`] reports, sorted.
pub fn detect(text: &str) -> Vec<PiiKind> {
    let mut kinds: Vec<PiiKind> = find(text).into_iter().map(|s| s.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The text a caller without the `pii:read` permission sees, given the
/// memory's flags:
/// - detected emails/phones/cards are replaced by `[EMAIL]`, `[PHONE]`,
///   `[CARD]` (always, whatever the flags say: a detected span is never
///   shown);
/// - if `flags` contains a kind that cannot be located in the text (Name,
///   Custom, or Email/Phone/Card that [`find`] did not locate), the whole text
///   becomes `[REDACTED]` — we cannot tell where it is, so we hide
///   everything.
///
/// A placeholder already in the text (`[EMAIL]`, `[PHONE]`, `[CARD]`) counts
/// as a located occurrence of its kind, which makes redaction idempotent.
pub fn redact(text: &str, flags: &[PiiKind]) -> String {
    // Each pass replaces at least one character that is not part of a
    // placeholder (no match can contain `[` or `]`), so the loop ends; the
    // cap only bounds the work on adversarial input, and hiding everything
    // is the safe answer there.
    const MAX_PASSES: usize = 8;

    if flags.iter().any(|k| !k.is_locatable()) {
        return REDACTED.to_string();
    }

    let mut located = placeholder_kinds(text);
    let mut current = text.to_string();
    let mut passes = 0;
    loop {
        let spans = find(&current);
        if spans.is_empty() {
            break;
        }
        passes += 1;
        if passes > MAX_PASSES {
            return REDACTED.to_string();
        }
        for span in &spans {
            located |= span.kind.bit();
        }
        current = replace_spans(&current, &spans);
    }

    if flags.iter().any(|k| located & k.bit() == 0) {
        return REDACTED.to_string();
    }
    current
}

fn placeholder_kinds(text: &str) -> u8 {
    [PiiKind::Email, PiiKind::Phone, PiiKind::Card]
        .into_iter()
        .filter(|k| text.contains(k.placeholder()))
        .fold(0, |acc, k| acc | k.bit())
}

fn replace_spans(text: &str, spans: &[PiiSpan]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for span in spans {
        out.push_str(&text[last..span.start]);
        out.push_str(span.kind.placeholder());
        last = span.end;
    }
    out.push_str(&text[last..]);
    out
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Byte ranges already claimed by a match (non-overlapping), start → end.
#[derive(Default)]
struct Occupied(BTreeMap<usize, usize>);

impl Occupied {
    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.0
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > start)
    }

    fn contains(&self, pos: usize) -> bool {
        self.overlaps(pos, pos + 1)
    }

    fn insert(&mut self, start: usize, end: usize) {
        self.0.insert(start, end);
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_joiner(c: char) -> bool {
    matches!(c, '.' | '-' | '/')
}

/// Whether the character `near` (with `far` just beyond it) glues a match to
/// a longer run of letters or digits.
fn glues(near: Option<(usize, char)>, far: Option<(usize, char)>, occupied: &Occupied) -> bool {
    let Some((i, c)) = near else {
        return false;
    };
    if occupied.contains(i) {
        return false;
    }
    is_word(c) || (is_joiner(c) && far.is_some_and(|(j, d)| is_word(d) && !occupied.contains(j)))
}

/// Whether `text[start..end]` is not part of a longer letter/digit run.
fn stands_alone(text: &str, start: usize, end: usize, occupied: &Occupied) -> bool {
    let mut before = text[..start].char_indices().rev();
    let (b1, b2) = (before.next(), before.next());
    let mut after = text[end..].char_indices().map(|(i, c)| (i + end, c));
    let (a1, a2) = (after.next(), after.next());
    !glues(b1, b2, occupied) && !glues(a1, a2, occupied)
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------------
// Email
// ---------------------------------------------------------------------------

static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[\p{Latin}\p{Greek}\p{Cyrillic}0-9._%+\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+(?:xn--[A-Za-z0-9\-]*[A-Za-z0-9]|[A-Za-z]{2,})",
    )
    .expect("email regex")
});

/// File extensions that follow `@2x`-style image names, never real TLDs.
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif", "heic",
];

fn find_emails(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for m in EMAIL_RE.find_iter(text) {
        let s = m.as_str();
        let at = s.find('@').unwrap_or(0);
        let lead = s[..at].bytes().take_while(|&b| b == b'.').count();
        if lead == at {
            continue;
        }
        let tld = &s[s.rfind('.').map_or(0, |i| i + 1)..];
        if IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(tld)) {
            continue;
        }
        out.push((m.start() + lead, m.end()));
    }
    out
}

// ---------------------------------------------------------------------------
// Card
// ---------------------------------------------------------------------------

/// Runs of digit groups joined by single spaces or dashes.
static DIGIT_CHAIN_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]+(?:[ \-][0-9]+)*").expect("digit chain regex"));

const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;

fn find_cards(text: &str, occupied: &Occupied) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for m in DIGIT_CHAIN_RE.find_iter(text) {
        if m.end() - m.start() < CARD_MIN_DIGITS {
            continue;
        }
        // Group byte ranges (absolute offsets).
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let bytes = m.as_str().as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((m.start() + start, m.start() + i));
            i += 1; // skip the separator
        }
        let mut first = 0;
        'windows: while first < groups.len() {
            // Longest window first, bounded by the digit count.
            let mut last = first;
            let mut total = 0;
            let mut candidates = Vec::new();
            while last < groups.len() {
                total += groups[last].1 - groups[last].0;
                if total > CARD_MAX_DIGITS {
                    break;
                }
                if total >= CARD_MIN_DIGITS {
                    candidates.push(last);
                }
                last += 1;
            }
            for &last in candidates.iter().rev() {
                if card_window_ok(text, &groups[first..=last], occupied) {
                    out.push((groups[first].0, groups[last].1));
                    first = last + 1;
                    continue 'windows;
                }
            }
            first += 1;
        }
    }
    out
}

fn card_window_ok(text: &str, groups: &[(usize, usize)], occupied: &Occupied) -> bool {
    let bytes = text.as_bytes();
    let (start, end) = (groups[0].0, groups[groups.len() - 1].1);
    if !(b'2'..=b'6').contains(&bytes[start]) {
        return false;
    }
    if groups.len() > 1 {
        let sep = bytes[groups[0].1];
        if groups[..groups.len() - 1].iter().any(|g| bytes[g.1] != sep) {
            return false;
        }
        let last = groups.len() - 1;
        let sizes_ok = groups.iter().enumerate().all(|(i, g)| {
            let n = g.1 - g.0;
            if i == 0 {
                n == 4
            } else if i == last {
                (1..=6).contains(&n)
            } else {
                (3..=6).contains(&n)
            }
        });
        if !sizes_ok {
            return false;
        }
    }
    let digits: Vec<u8> = bytes[start..end]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    luhn_valid(&digits) && stands_alone(text, start, end, occupied)
}

// ---------------------------------------------------------------------------
// Phone
// ---------------------------------------------------------------------------

const PHONE_MIN_DIGITS: usize = 7;
const PHONE_MAX_DIGITS: usize = 15;

/// North-American formats; the optional `1` prefix is the country code.
static NA_PHONE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:1[ .\-])?(?:\([0-9]{3}\) ?[0-9]{3}[ .\-][0-9]{4}|[0-9]{3}-[0-9]{3}-[0-9]{4}|[0-9]{3}\.[0-9]{3}\.[0-9]{4})",
    )
    .expect("phone regex")
});

fn find_na_phones(text: &str, occupied: &Occupied) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(m) = NA_PHONE_RE.find_at(text, at) {
        let (start, end) = (m.start(), m.end());
        if !occupied.overlaps(start, end) && stands_alone(text, start, end, occupied) {
            out.push((start, end));
            at = end;
        } else {
            // A rejected candidate may hide a valid one starting inside it
            // (matches are ASCII, so `start + 1` is a char boundary).
            at = start + 1;
        }
    }
    out
}

fn find_intl_phones(text: &str, occupied: &Occupied) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find('+') {
        let start = from + offset;
        from = start + 1;
        if let Some(end) = intl_phone_at(text, start, occupied) {
            out.push((start, end));
            from = end;
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    Plus,
    Digit,
    Sep,
    Open,
    Close,
}

/// The end of the international number starting with the `+` at `start`.
fn intl_phone_at(text: &str, start: usize, occupied: &Occupied) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut prev = Prev::Plus;
    let mut in_paren = false;
    let mut paren_digits = 0;
    let mut digits = 0;
    // (end, digits so far) after each complete group.
    let mut ends: Vec<(usize, usize)> = Vec::new();
    let mut pos = start + 1;
    while pos < bytes.len() {
        prev = match bytes[pos] {
            b'0'..=b'9' => {
                if in_paren {
                    paren_digits += 1;
                    if paren_digits > 4 {
                        break;
                    }
                }
                digits += 1;
                Prev::Digit
            }
            b' ' | b'-' | b'.' if !in_paren && matches!(prev, Prev::Digit | Prev::Close) => {
                Prev::Sep
            }
            b'(' if !in_paren && prev != Prev::Open => {
                in_paren = true;
                paren_digits = 0;
                Prev::Open
            }
            b')' if in_paren && prev == Prev::Digit => {
                in_paren = false;
                Prev::Close
            }
            _ => break,
        };
        pos += 1;
        let group_end = !in_paren
            && match prev {
                Prev::Digit => !bytes.get(pos).is_some_and(u8::is_ascii_digit),
                Prev::Close => true,
                _ => false,
            };
        if group_end {
            ends.push((pos, digits));
            if digits > PHONE_MAX_DIGITS {
                break;
            }
        }
    }

    let &(full_end, full_digits) = ends.last()?;
    let (end, digits) = if full_digits <= PHONE_MAX_DIGITS {
        (full_end, full_digits)
    } else {
        // Too long: keep the groups before a space (the rest is another
        // number), but never cut a dash- or dot-joined run.
        *ends
            .iter()
            .rev()
            .find(|&&(e, d)| d <= PHONE_MAX_DIGITS && bytes.get(e) == Some(&b' '))?
    };
    if digits < PHONE_MIN_DIGITS {
        return None;
    }
    let body = &text[start + 1..end];
    if looks_like_decimal(body) || looks_like_date(body) {
        return None;
    }
    stands_alone(text, start, end, occupied).then_some(end)
}

/// `12345.67`: a signed amount, not a phone.
fn looks_like_decimal(body: &str) -> bool {
    let mut non_digits = body.bytes().filter(|b| !b.is_ascii_digit());
    non_digits.next() == Some(b'.') && non_digits.next().is_none()
}

/// `2024-05-01`, `01.05.2024`: a date, not a phone.
fn looks_like_date(body: &str) -> bool {
    for sep in ['-', '.'] {
        let parts: Vec<&str> = body.split(sep).collect();
        if parts.len() != 3 || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let lens = [parts[0].len(), parts[1].len(), parts[2].len()];
        if lens == [4, 2, 2] || lens == [2, 2, 4] {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spans_of(text: &str, kind: PiiKind) -> Vec<&str> {
        find(text)
            .into_iter()
            .filter(|s| s.kind == kind)
            .map(|s| &text[s.range()])
            .collect()
    }

    /// Positive example: `(text, expected matched substring)`.
    fn check_positive(kind: PiiKind, cases: &[(&str, &str)]) {
        for &(text, expected) in cases {
            let found = find(text);
            assert_eq!(
                found.len(),
                1,
                "{kind}: expected exactly one span in {text:?}, got {found:?}"
            );
            assert_eq!(found[0].kind, kind, "{kind}: wrong kind in {text:?}");
            assert_eq!(
                &text[found[0].range()],
                expected,
                "{kind}: wrong span in {text:?}"
            );
        }
    }

    fn check_negative(kind: PiiKind, cases: &[&str]) {
        for &text in cases {
            let found = spans_of(text, kind);
            assert!(
                found.is_empty(),
                "{kind}: false positive {found:?} in {text:?}"
            );
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in PiiKind::ALL {
            assert_eq!(PiiKind::parse(kind.as_str()), Some(kind));
            assert_eq!(PiiKind::parse(&kind.as_str().to_uppercase()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            // serde uses the same names.
            use serde::de::value::{Error, StrDeserializer};
            use serde::de::IntoDeserializer;
            use serde::Deserialize;
            let de: StrDeserializer<'_, Error> = kind.as_str().into_deserializer();
            assert_eq!(PiiKind::deserialize(de).unwrap(), kind);
        }
        assert_eq!(PiiKind::parse(" phone "), Some(PiiKind::Phone));
        assert_eq!(PiiKind::parse("ssn"), None);
        assert_eq!(PiiKind::parse(""), None);
        assert!(PiiKind::Email < PiiKind::Phone && PiiKind::Card < PiiKind::Name);
    }

    #[test]
    fn email_positives() {
        check_positive(
            PiiKind::Email,
            &[
                ("john.doe@example.com", "john.doe@example.com"),
                (
                    "mail a+tag@sub.example.co.uk now",
                    "a+tag@sub.example.co.uk",
                ),
                ("x_y%z@mail-server.io", "x_y%z@mail-server.io"),
                ("UPPER.Case@EXAMPLE.ORG.", "UPPER.Case@EXAMPLE.ORG"),
                ("<jane@example.org>", "jane@example.org"),
                ("mailto:bob@example.net?subject=hi", "bob@example.net"),
                ("用户 zhang.san@example.cn 发邮件", "zhang.san@example.cn"),
                ("写信给john@example.com日本語", "john@example.com"),
                ("Ünïcödé: ñoño@example.es", "ñoño@example.es"),
                ("first-last@x-y.travel", "first-last@x-y.travel"),
                ("d1g1ts@456.example.com", "d1g1ts@456.example.com"),
                ("see ...ann@example.com", "ann@example.com"),
                ("idn: user@example.xn--p1ai ok", "user@example.xn--p1ai"),
                ("(émilie.dupont@exemple.fr)", "émilie.dupont@exemple.fr"),
                ("Почта: иван@example.ru", "иван@example.ru"),
            ],
        );
    }

    #[test]
    fn email_negatives() {
        check_negative(
            PiiKind::Email,
            &[
                "@username mentioned it",
                "user@localhost",
                "foo@bar",
                "npm i lodash@4.17.21",
                "icon@2x.png and logo@3x.JPG",
                "john at example dot com",
                "a@b.c",
                "name@.com",
                "@example.com",
                "email@-example.com",
                "x@y_z.com",
                "2024-05-01 12:30:00 v1.2.3 192.168.0.1",
                "价格 @ 3.50 元",
            ],
        );
    }

    #[test]
    fn card_positives() {
        check_positive(
            PiiKind::Card,
            &[
                ("4111111111111111", "4111111111111111"),
                ("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
                ("4111-1111-1111-1111.", "4111-1111-1111-1111"),
                ("mc: 5555555555554444", "5555555555554444"),
                ("amex 3782 822463 10005", "3782 822463 10005"),
                ("amex 378282246310005", "378282246310005"),
                ("discover 6011 1111 1111 1117", "6011 1111 1111 1117"),
                ("jcb 3530111333300000", "3530111333300000"),
                ("diners 30569309025904", "30569309025904"),
                ("visa13 4222222222222", "4222222222222"),
                ("mc2 2223003122003222", "2223003122003222"),
                ("unionpay 6200000000000005", "6200000000000005"),
                ("19 digits 6011000000000000001", "6011000000000000001"),
                ("カード番号：4111 1111 1111 1111です", "4111 1111 1111 1111"),
                ("qty 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
                ("(4012888888881881)", "4012888888881881"),
            ],
        );
    }

    #[test]
    fn card_negatives() {
        check_negative(
            PiiKind::Card,
            &[
                "4111111111111112",
                "41111111111111111",
                "id 12344111111111111111199",
                "ts 1715260800000",
                "0000000000000000",
                "4111 1111 1111 111",
                "4111.1111.1111.1111",
                "4111  1111  1111  1111",
                "4111-1111 1111-1111",
                "ab4111111111111111",
                "4111111111111111xyz",
                "score 0.4111111111111103",
                "550e8400-e29b-41d4-a716-446655440000",
                "12345678-1234-1234-1234-123456789012",
                "41 11 11 11 11 11 11 11",
                "2024-05-01 2023 123456 1,234.56",
            ],
        );
    }

    #[test]
    fn phone_positives() {
        check_positive(
            PiiKind::Phone,
            &[
                ("call +1 (555) 123-4567 now", "+1 (555) 123-4567"),
                ("+44 20 7946 0958", "+44 20 7946 0958"),
                ("+44 (0) 20 7946 0958", "+44 (0) 20 7946 0958"),
                ("Berlin: +49-30-1234567.", "+49-30-1234567"),
                ("+33.1.23.45.67.89", "+33.1.23.45.67.89"),
                ("+14155552671", "+14155552671"),
                ("(555) 123-4567", "(555) 123-4567"),
                ("(555)123-4567", "(555)123-4567"),
                ("call me at 555-123-4567!", "555-123-4567"),
                ("555.123.4567", "555.123.4567"),
                ("toll free 1-800-555-0199", "1-800-555-0199"),
                ("電話：+86 138 0013 8000。", "+86 138 0013 8000"),
                ("東京 +81 3-1234-5678です", "+81 3-1234-5678"),
                ("+44 20 7946 0958 2024-05-01 meeting", "+44 20 7946 0958"),
            ],
        );
        // Two phones side by side.
        assert_eq!(
            spans_of("555-123-4567, 555-987-6543", PiiKind::Phone),
            ["555-123-4567", "555-987-6543"]
        );
    }

    #[test]
    fn phone_negatives() {
        check_negative(
            PiiKind::Phone,
            &[
                "2024-05-01",
                "2024-05-01T12:30:00+05:30",
                "12:30:45.123",
                "v1.2.3 and 10.15.7",
                "in 2023 we had 123456 users",
                "1234567890",
                "192.168.1.1 and 10.255.255.255",
                "550e8400-e29b-41d4-a716-446655440000",
                "4111 1111 1111 1111",
                "4111-1111-1111-1111",
                "$1,234.56 and 1,234,567.89",
                "+12345.67",
                "+1,500,000",
                "+2024-05-01",
                "555-1234",
                "ISBN 978-0-306-40615-7",
                "123-45-6789",
                "555-123-45678",
                "1.555.123.4567.8",
                "ID-555-123-4567",
                "v555.123.4567",
                "1+1234567",
                "+1-555-123-4567-8901-2345",
                "+12 345",
            ],
        );
    }

    #[test]
    fn priority_and_ordering() {
        let text = "mail +14155552671@sms.example.com or 4111 1111 1111 1111 or 555-123-4567";
        let found = find(text);
        let kinds: Vec<_> = found.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [PiiKind::Email, PiiKind::Card, PiiKind::Phone]);
        assert_eq!(&text[found[0].range()], "+14155552671@sms.example.com");
        assert_eq!(
            detect(text),
            [PiiKind::Email, PiiKind::Phone, PiiKind::Card]
        );
        assert!(detect("nothing here, v1.2.3 on 2024-05-01").is_empty());
    }

    #[test]
    fn redact_replaces_located_spans() {
        assert_eq!(
            redact("mail ann@example.com or call 555-123-4567", &[]),
            "mail [EMAIL] or call [PHONE]"
        );
        assert_eq!(
            redact("card 4111 1111 1111 1111", &[PiiKind::Card]),
            "card [CARD]"
        );
        // Flags naming located kinds keep the rest of the text.
        assert_eq!(
            redact(
                "ann@example.com, +44 20 7946 0958",
                &[PiiKind::Email, PiiKind::Phone]
            ),
            "[EMAIL], [PHONE]"
        );
        // Nothing to hide.
        assert_eq!(redact("v1.2.3 on 2024-05-01", &[]), "v1.2.3 on 2024-05-01");
        assert_eq!(redact("", &[]), "");
    }

    #[test]
    fn redact_hides_everything_when_flag_not_locatable() {
        let text = "Alice Martin, ann@example.com";
        assert_eq!(redact(text, &[PiiKind::Name]), REDACTED);
        assert_eq!(redact(text, &[PiiKind::Custom]), REDACTED);
        assert_eq!(redact(text, &[PiiKind::Email, PiiKind::Name]), REDACTED);
        // Flagged as containing a phone, but none can be found.
        assert_eq!(redact(text, &[PiiKind::Phone]), REDACTED);
        assert_eq!(
            redact("call me at five five five", &[PiiKind::Phone]),
            REDACTED
        );
        assert_eq!(redact("", &[PiiKind::Card]), REDACTED);
        // The located kind alone is fine.
        assert_eq!(redact(text, &[PiiKind::Email]), "Alice Martin, [EMAIL]");
    }

    #[test]
    fn redact_adjacent_spans() {
        // An email glued to a phone: both go.
        assert_eq!(redact("ann@example.com555-123-4567", &[]), "[EMAIL][PHONE]");
        assert_eq!(
            redact("ann@example.com,bob@example.org", &[]),
            "[EMAIL],[EMAIL]"
        );
        assert_eq!(
            redact("4111111111111111 555-123-4567", &[]),
            "[CARD] [PHONE]"
        );
        assert_eq!(
            redact("(555) 123-4567/(555) 987-6543", &[]),
            "[PHONE]/[PHONE]"
        );
    }

    #[test]
    fn redact_multibyte_text() {
        assert_eq!(
            redact(
                "連絡先：ann@example.com、電話＋ 555-123-4567。カード4111 1111 1111 1111です",
                &[]
            ),
            "連絡先：[EMAIL]、電話＋ [PHONE]。カード[CARD]です"
        );
        assert_eq!(
            redact("😀ann@example.com😀", &[PiiKind::Email]),
            "😀[EMAIL]😀"
        );
        assert_eq!(
            redact("Ελένη: +30 21 0123 4567 — ok", &[PiiKind::Phone]),
            "Ελένη: [PHONE] — ok"
        );
        assert_eq!(redact("Ελένη Παπαδοπούλου", &[PiiKind::Name]), REDACTED);
    }

    #[test]
    fn redact_is_idempotent_on_examples() {
        for (text, flags) in [
            ("ann@example.com", vec![PiiKind::Email]),
            ("ann@example.com555-123-4567", vec![PiiKind::Phone]),
            ("nothing", vec![PiiKind::Card]),
            ("Alice", vec![PiiKind::Name]),
            ("+44 20 7946 0958 or 4111111111111111", vec![]),
        ] {
            let once = redact(text, &flags);
            assert_eq!(redact(&once, &flags), once, "{text:?}");
        }
        // A placeholder from an earlier redaction counts as located.
        assert_eq!(redact("[EMAIL] wrote", &[PiiKind::Email]), "[EMAIL] wrote");
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b"4111111111111112"));
    }

    // -- property tests ----------------------------------------------------

    fn luhn_complete(mut digits: Vec<u8>) -> String {
        digits.push(b'0');
        let sum_with_zero: u32 = {
            let n = digits.len();
            digits
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    let d = u32::from(d - b'0');
                    if (n - 1 - i) % 2 == 1 {
                        let d2 = d * 2;
                        if d2 > 9 {
                            d2 - 9
                        } else {
                            d2
                        }
                    } else {
                        d
                    }
                })
                .sum()
        };
        let check = (10 - sum_with_zero % 10) % 10;
        *digits.last_mut().unwrap() = b'0' + check as u8;
        String::from_utf8(digits).unwrap()
    }

    /// A valid card number, contiguous or grouped by fours with spaces/dashes.
    fn card_strategy() -> impl Strategy<Value = String> {
        (
            b'2'..=b'6',
            prop::collection::vec(b'0'..=b'9', 11..=17),
            prop_oneof![Just(None), Just(Some(' ')), Just(Some('-'))],
        )
            .prop_map(|(first, rest, sep)| {
                let mut digits = vec![first];
                digits.extend(rest);
                let number = luhn_complete(digits);
                match sep {
                    None => number,
                    Some(sep) => number
                        .as_bytes()
                        .chunks(4)
                        .map(|c| std::str::from_utf8(c).unwrap())
                        .collect::<Vec<_>>()
                        .join(&sep.to_string()),
                }
            })
    }

    fn email_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9._%+-]{0,12}@[a-z0-9]{1,8}(-[a-z0-9]{1,4})?\\.(com|org|io|co\\.uk|travel)"
    }

    fn pii_strategy() -> impl Strategy<Value = String> {
        prop_oneof![email_strategy(), card_strategy()]
    }

    /// Text that stresses the detectors: digits, separators, `+`, `@`, dots,
    /// letters and multibyte chars.
    fn noisy_strategy() -> impl Strategy<Value = String> {
        "[0-9 +()\\-.@a-zA-Z_,:/éß日本😀\\[\\]]{0,80}"
    }

    fn check_spans(text: &str, spans: &[PiiSpan]) -> Result<(), TestCaseError> {
        let mut prev_end = 0;
        for s in spans {
            prop_assert!(s.start < s.end, "empty span {:?}", s);
            prop_assert!(s.start >= prev_end, "unsorted/overlapping {:?}", spans);
            prop_assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
            prop_assert!(s.kind.is_locatable());
            prev_end = s.end;
        }
        Ok(())
    }

    fn flags_strategy() -> impl Strategy<Value = Vec<PiiKind>> {
        prop::collection::vec(prop::sample::select(PiiKind::ALL.to_vec()), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_and_spans_are_well_formed(text in any::<String>(), flags in flags_strategy()) {
            let spans = find(&text);
            check_spans(&text, &spans)?;
            let _ = detect(&text);
            let _ = redact(&text, &flags);
        }

        #[test]
        fn noisy_spans_are_well_formed(text in noisy_strategy(), flags in flags_strategy()) {
            let spans = find(&text);
            check_spans(&text, &spans)?;
            let once = redact(&text, &flags);
            prop_assert_eq!(redact(&once, &flags), once);
        }

        #[test]
        fn redacted_text_never_shows_a_located_span(
            parts in prop::collection::vec((any::<String>(), pii_strategy()), 1..5),
            tail in any::<String>(),
        ) {
            let mut text = String::new();
            for (filler, pii) in &parts {
                text.push_str(filler);
                text.push(' ');
                text.push_str(pii);
                text.push(' ');
            }
            text.push_str(&tail);
            let spans = find(&text);
            check_spans(&text, &spans)?;
            let located: Vec<PiiKind> = detect(&text);
            for flags in [Vec::new(), located] {
                let out = redact(&text, &flags);
                for s in &spans {
                    let secret = &text[s.range()];
                    prop_assert!(!out.contains(secret), "{:?} leaked in {:?}", secret, out);
                }
            }
        }

        #[test]
        fn inserted_pii_is_found(
            parts in prop::collection::vec(("[a-zA-Zéß日本😀 ,;!?]{0,20}", pii_strategy()), 1..5),
        ) {
            let mut text = String::new();
            let mut expected = Vec::new();
            for (filler, pii) in &parts {
                text.push_str(filler);
                text.push(' ');
                let start = text.len();
                text.push_str(pii);
                expected.push(start..text.len());
                text.push(' ');
            }
            let spans = find(&text);
            for range in expected {
                prop_assert!(
                    spans.iter().any(|s| s.start <= range.start && range.end <= s.end),
                    "{:?} not covered in {:?}: {:?}", &text[range.clone()], text, spans
                );
            }
        }

        #[test]
        fn redaction_is_idempotent(
            parts in prop::collection::vec((any::<String>(), pii_strategy()), 0..4),
            pick in any::<u8>(),
        ) {
            let text: String = parts.iter().map(|(f, p)| format!("{f} {p} ")).collect();
            let located = detect(&text);
            let flags: Vec<PiiKind> = located
                .iter()
                .enumerate()
                .filter(|(i, _)| pick & (1 << i) != 0)
                .map(|(_, k)| *k)
                .collect();
            let once = redact(&text, &flags);
            prop_assert_eq!(&redact(&once, &flags), &once);
            // Flags that name located kinds never blank the text.
            prop_assert!(flags.is_empty() || once != REDACTED);
        }

        #[test]
        fn common_non_pii_numbers_are_ignored(
            y in 1900u32..2100, mo in 1u32..=12, d in 1u32..=28,
            h in 0u32..24, mi in 0u32..60, s in 0u32..60,
            v in (0u32..100, 0u32..100, 0u32..1000),
            ip in (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255),
            n in any::<u32>(),
            cents in 0u32..100,
            uuid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ) {
            let text = format!(
                "{y:04}-{mo:02}-{d:02} {y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z {d:02}.{mo:02}.{y:04} \
                 {h:02}:{mi:02} v{}.{}.{} {}.{}.{}.{} {n} ${},{:03}.{cents:02} {uuid} +{y:04}-{mo:02}-{d:02}",
                v.0, v.1, v.2, ip.0, ip.1, ip.2, ip.3, n / 1000, n % 1000
            );
            prop_assert!(find(&text).is_empty(), "false positive in {:?}: {:?}", text, find(&text));
        }
    }
}
