//! `engram models check`: an Ollama-style model env file, parsed and checked.
//!
//! The file format (what `docker --env-file`, systemd and shells agree on,
//! without variable expansion or multi-line values):
//! - `KEY=VALUE` lines, an optional `export ` prefix, whitespace around the
//!   key, the `=` and the value is ignored; blank lines and full-line `#`
//!   comments are skipped; a UTF-8 BOM and CRLF line endings are accepted;
//! - unquoted values end at a `#` preceded by whitespace (an inline comment);
//!   a `#` inside a word (`a#b`) is text;
//! - `'single quotes'` are literal; `"double quotes"` understand `\"`, `\\`,
//!   `\n`, `\t` and `\r` (any other backslash is kept as is); `#` inside
//!   quotes is text; after the closing quote only whitespace and a comment
//!   may follow;
//! - keys are `[A-Za-z_][A-Za-z0-9_]*`; a missing `=`, a bad key, an
//!   unterminated quote and a key set twice are errors with line numbers.
//!
//! The checks: the available list is one variable (`OLLAMA_MODELS` unless
//! told otherwise; items separated by commas and/or whitespace), the
//! per-model variables are the keys ending in `_MODEL`. Every reference must
//! be pinned (`name:tag` with a tag other than `latest`, or
//! `name@sha256:<64 hex>`), every per-model variable must name a listed model,
//! duplicates in the list are warnings and an empty list is an error.

use serde::Serialize;
use std::collections::HashMap;

/// One variable of the file, with the line it was set on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A finding, tied to a line when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl Issue {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Issue {
            line: Some(line),
            message: message.into(),
        }
    }

    fn general(message: impl Into<String>) -> Self {
        Issue {
            line: None,
            message: message.into(),
        }
    }
}

/// The variables in file order (each key once) and the syntax errors.
#[derive(Debug, Default)]
pub struct EnvFile {
    pub vars: Vec<Var>,
    pub errors: Vec<Issue>,
}

impl EnvFile {
    pub fn get(&self, key: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.key == key)
    }
}

fn valid_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parse an env file. Never panics; every problem becomes an error with its
/// line, and parsing goes on with the next line.
pub fn parse(text: &str) -> EnvFile {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = EnvFile::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start_matches(is_space);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        // `export KEY=...`, but not a key named `export` (`export = 1`).
        let body = match body.strip_prefix("export") {
            Some(rest)
                if rest.starts_with(is_space)
                    && !rest.trim_start_matches(is_space).starts_with('=') =>
            {
                rest.trim_start_matches(is_space)
            }
            _ => body,
        };
        let Some((key, rest)) = body.split_once('=') else {
            out.errors.push(Issue::at(
                n,
                format!(
                    "expected KEY=VALUE, found {:?}",
                    engram_core::text::truncate_bytes(body.trim_end(), 60)
                ),
            ));
            continue;
        };
        let key = key.trim_matches(is_space);
        if !valid_key(key) {
            out.errors.push(Issue::at(
                n,
                format!(
                    "invalid variable name {key:?} (letters, digits and '_', not starting with a digit)"
                ),
            ));
            continue;
        }
        let value = match parse_value(rest) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(Issue::at(n, format!("{key}: {e}")));
                continue;
            }
        };
        if let Some(first) = seen.get(key) {
            out.errors.push(Issue::at(
                n,
                format!("duplicate key {key}: set on lines {first} and {n}"),
            ));
            continue;
        }
        seen.insert(key.to_string(), n);
        out.vars.push(Var {
            key: key.to_string(),
            value,
            line: n,
        });
    }
    out
}

/// The value after `=` (the line's end already stripped of `\r`).
fn parse_value(rest: &str) -> Result<String, String> {
    let v = rest.trim_start_matches(is_space);
    let mut chars = v.char_indices();
    let (value, after) = match chars.next() {
        Some((_, '\'')) => match v[1..].find('\'') {
            Some(end) => (v[1..1 + end].to_string(), &v[end + 2..]),
            None => return Err("unterminated single quote".into()),
        },
        Some((_, '"')) => {
            let mut s = String::new();
            let mut end = None;
            let mut it = v[1..].char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '"' => {
                        end = Some(1 + i + 1);
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, '"')) => s.push('"'),
                        Some((_, '\\')) => s.push('\\'),
                        Some((_, 'n')) => s.push('\n'),
                        Some((_, 't')) => s.push('\t'),
                        Some((_, 'r')) => s.push('\r'),
                        Some((_, other)) => {
                            s.push('\\');
                            s.push(other);
                        }
                        None => s.push('\\'),
                    },
                    c => s.push(c),
                }
            }
            match end {
                Some(e) => (s, &v[e..]),
                None => return Err("unterminated double quote".into()),
            }
        }
        _ => {
            // Unquoted: up to a `#` that follows whitespace (or starts the value).
            let mut cut = v.len();
            let mut prev_space = rest.len() > v.len() || v.is_empty();
            for (i, c) in v.char_indices() {
                if c == '#' && prev_space {
                    cut = i;
                    break;
                }
                prev_space = is_space(c);
            }
            return Ok(v[..cut].trim_matches(is_space).to_string());
        }
    };
    let after = after.trim_start_matches(is_space);
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!(
            "unexpected text after the closing quote: {:?}",
            engram_core::text::truncate_bytes(after, 40)
        ));
    }
    Ok(value)
}

/// A model reference, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Everything before the tag and digest (may hold a registry and a path).
    pub name: String,
    pub tag: Option<String>,
    /// The 64 hex digits of `@sha256:`.
    pub digest: Option<String>,
}

impl ModelRef {
    /// The reference without its digest: `name[:tag]`.
    pub fn without_digest(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Parse and check that a reference is pinned: `name:tag` (tag not
/// `latest`) or `name[:tag]@sha256:<64 lowercase hex>`.
pub fn parse_ref(s: &str) -> Result<ModelRef, String> {
    if s.is_empty() {
        return Err("empty model reference".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?}: contains {c:?}"));
    }
    let (base, digest) = match s.split_once('@') {
        Some((base, d)) => {
            let Some(hex) = d.strip_prefix("sha256:") else {
                return Err(format!("{s}: a digest must be @sha256:<64 hex digits>"));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!(
                    "{s}: a sha256 digest is 64 lowercase hex digits, got {:?}",
                    engram_core::text::truncate_bytes(hex, 70)
                ));
            }
            (base, Some(hex.to_string()))
        }
        None => (s, None),
    };
    // The tag follows the last ':' after the last '/' (a registry port is not a tag).
    let slash = base.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match base[slash..].rfind(':') {
        Some(c) => (&base[..slash + c], Some(&base[slash + c + 1..])),
        None => (base, None),
    };
    if name.is_empty() || name.ends_with('/') {
        return Err(format!("{s}: no model name"));
    }
    if let Some(t) = tag {
        if t.is_empty() {
            return Err(format!("{s}: empty tag"));
        }
        if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "{s}: tag {t:?} may only hold letters, digits, '_', '.' and '-'"
            ));
        }
        if t == "latest" && digest.is_none() {
            return Err(format!(
                "{s}: \"latest\" is not a pin; name a version tag or a @sha256: digest"
            ));
        }
    } else if digest.is_none() {
        return Err(format!(
            "{s}: not pinned; name a tag (name:tag) or a digest (name@sha256:...)"
        ));
    }
    Ok(ModelRef {
        name: name.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// A model of the available list and who uses it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub model: String,
    pub line: usize,
    /// The per-model variables naming it.
    pub used_by: Vec<String>,
    /// With `--server`: the id the server lists it under (`null`: missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<Option<String>>,
}

/// What `engram models check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
    pub models: Vec<ModelEntry>,
}

impl Report {
    /// Sort the findings by line (stable) and set `ok`.
    fn finish(&mut self) {
        self.errors.sort_by_key(|e| e.line.unwrap_or(0));
        self.warnings.sort_by_key(|e| e.line.unwrap_or(0));
        self.ok = self.errors.is_empty();
    }
}

/// The items of the list variable: split on commas and whitespace.
pub fn list_items(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Check a parsed file: pins, list membership, duplicates.
pub fn check(file: &EnvFile, list_var: &str) -> Report {
    let mut r = Report {
        ok: false,
        errors: file.errors.clone(),
        warnings: Vec::new(),
        models: Vec::new(),
    };
    let list = file.get(list_var);
    let items = list.map(|v| list_items(&v.value)).unwrap_or_default();
    match list {
        None => r.errors.push(Issue::general(format!(
            "{list_var} is not set: it must list the available models"
        ))),
        Some(v) if items.is_empty() => r.errors.push(Issue::at(
            v.line,
            format!("{list_var} is empty: it must list the available models"),
        )),
        Some(v) => {
            for item in &items {
                if r.models.iter().any(|m| &m.model == item) {
                    r.warnings.push(Issue::at(
                        v.line,
                        format!("{list_var} lists {item} more than once"),
                    ));
                    continue;
                }
                if let Err(e) = parse_ref(item) {
                    r.errors.push(Issue::at(v.line, format!("{list_var}: {e}")));
                }
                r.models.push(ModelEntry {
                    model: item.clone(),
                    line: v.line,
                    used_by: Vec::new(),
                    server_id: None,
                });
            }
        }
    }
    for var in file
        .vars
        .iter()
        .filter(|v| v.key.ends_with("_MODEL") && v.key != list_var)
    {
        let value = var.value.trim();
        if value.is_empty() {
            r.errors
                .push(Issue::at(var.line, format!("{} is empty", var.key)));
            continue;
        }
        if let Err(e) = parse_ref(value) {
            r.errors
                .push(Issue::at(var.line, format!("{}: {e}", var.key)));
        }
        match r.models.iter_mut().find(|m| m.model == value) {
            Some(m) => m.used_by.push(var.key.clone()),
            None if list.is_some() => r.errors.push(Issue::at(
                var.line,
                format!("{} = {value} is not in {list_var}", var.key),
            )),
            None => {}
        }
    }
    r.finish();
    r
}

/// How a listed reference is found among the ids a server lists.
///
/// The rule: the same id, or the same id once the `@sha256:` digest is
/// dropped on either side (`/models` of OpenAI-compatible servers carries no
/// digests, so a digest cannot be verified there). A server id without any
/// tag (llama.cpp and vLLM serve one model under an alias, e.g.
/// `gemma3-270m`) matches a pinned reference of that name (`gemma3-270m:q4`)
/// with a warning that the tag could not be verified. A server id with a tag
/// must carry the same tag: `llama3:latest` never matches `llama3:8b`, and no
/// reference matches by Ollama's implicit `:latest`.
pub fn find_on_server<'a>(
    reference: &str,
    server: &'a [String],
) -> Option<(&'a String, Option<String>)> {
    let want = parse_ref(reference).ok();
    let want_plain = want
        .as_ref()
        .map(ModelRef::without_digest)
        .unwrap_or_else(|| reference.to_string());
    let strip = |id: &str| id.split_once('@').map_or(id, |(b, _)| b).to_string();
    if let Some(id) = server.iter().find(|id| id.as_str() == reference) {
        return Some((id, None));
    }
    if let Some(id) = server.iter().find(|id| strip(id) == want_plain) {
        let note = want.as_ref().and_then(|w| w.digest.as_ref()).map(|_| {
            format!("{reference}: the server lists {id}; /models reports no digest, so the digest is not verified")
        });
        return Some((id, note));
    }
    let w = want?;
    w.tag.as_ref()?;
    server
        .iter()
        .find(|id| {
            let plain = strip(id);
            let tagged = plain[plain.rfind('/').map_or(0, |i| i + 1)..].contains(':');
            !tagged && plain == w.name
        })
        .map(|id| {
            (
                id,
                Some(format!(
                    "{reference}: the server lists {id} without a tag; the tag is not verified"
                )),
            )
        })
}

/// Add the server's verdict to a report: every listed model must be served.
pub fn check_server(r: &mut Report, server: &[String], base_url: &str) {
    for m in &mut r.models {
        match find_on_server(&m.model, server) {
            Some((id, note)) => {
                m.server_id = Some(Some(id.clone()));
                if let Some(n) = note {
                    r.warnings.push(Issue::at(m.line, n));
                }
            }
            None => {
                m.server_id = Some(None);
                r.errors.push(Issue::at(
                    m.line,
                    format!(
                        "{} is not served by the LLM server at {base_url} (it lists {})",
                        m.model,
                        if server.is_empty() {
                            "no models".to_string()
                        } else {
                            server.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    r.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn map(f: &EnvFile) -> BTreeMap<String, String> {
        f.vars
            .iter()
            .map(|v| (v.key.clone(), v.value.clone()))
            .collect()
    }

    fn lines(issues: &[Issue]) -> Vec<usize> {
        issues.iter().map(|i| i.line.unwrap_or(0)).collect()
    }

    #[test]
    fn parses_the_edge_cases() {
        let text = "\u{feff}# models\r\n\
            export OLLAMA_MODELS=\"llama3:8b, qwen2.5:7b\"  # the list\r\n\
            \r\n\
            \t  CHAT_MODEL = llama3:8b # inline\r\n\
            SUMMARY_MODEL='qwen2.5:7b' \r\n\
            A=a#b\n\
            B=\"x # not a comment\"\n\
            E=\"say \\\"hi\\\"\\n\\\\ \\q\"\n\
            F=\n\
            G= # only a comment\n\
            H=#text\n\
            export=1\n\
            I='#'";
        let f = parse(text);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let m = map(&f);
        assert_eq!(m["OLLAMA_MODELS"], "llama3:8b, qwen2.5:7b");
        assert_eq!(m["CHAT_MODEL"], "llama3:8b");
        assert_eq!(m["SUMMARY_MODEL"], "qwen2.5:7b");
        assert_eq!(m["A"], "a#b");
        assert_eq!(m["B"], "x # not a comment");
        assert_eq!(m["E"], "say \"hi\"\n\\ \\q");
        assert_eq!(m["F"], "");
        assert_eq!(m["G"], "");
        assert_eq!(m["H"], "#text");
        assert_eq!(m["export"], "1");
        assert_eq!(m["I"], "#");
        assert_eq!(f.get("CHAT_MODEL").unwrap().line, 4);
    }

    #[test]
    fn rejects_with_line_numbers() {
        let text = "OK=1\n\
            no equals sign\n\
            1BAD=x\n\
            BAD KEY=x\n\
            Q=\"open\n\
            S='open\n\
            OK=2\n\
            T=\"done\" trailing\n\
            =empty";
        let f = parse(text);
        assert_eq!(
            lines(&f.errors),
            vec![2, 3, 4, 5, 6, 7, 8, 9],
            "{:?}",
            f.errors
        );
        let msg = |n: usize| {
            f.errors
                .iter()
                .find(|e| e.line == Some(n))
                .unwrap()
                .message
                .clone()
        };
        assert!(msg(2).contains("expected KEY=VALUE"), "{}", msg(2));
        assert!(msg(3).contains("invalid variable name \"1BAD\""));
        assert!(msg(5).contains("unterminated double quote"));
        assert!(msg(6).contains("unterminated single quote"));
        assert_eq!(msg(7), "duplicate key OK: set on lines 1 and 7");
        assert!(msg(8).contains("after the closing quote"));
        assert_eq!(map(&f)["OK"], "1", "the first value stays");
    }

    #[test]
    fn pins() {
        for ok in [
            "llama3:8b",
            "qwen2.5:7b-instruct-q4_K_M",
            "registry.local:5000/team/llama3:8b",
            &format!("llama3@sha256:{D}"),
            &format!("llama3:latest@sha256:{D}"),
        ] {
            assert!(parse_ref(ok).is_ok(), "{ok}: {:?}", parse_ref(ok));
        }
        for (bad, why) in [
            ("llama3", "not pinned"),
            ("llama3:latest", "\"latest\" is not a pin"),
            ("registry.local:5000/llama3", "not pinned"),
            ("llama3:", "empty tag"),
            ("llama3@sha256:abc", "64 lowercase hex"),
            (
                &format!("llama3@sha256:{}", D.to_uppercase()),
                "64 lowercase hex",
            ),
            (&format!("llama3@md5:{D}"), "@sha256:"),
            (":8b", "no model name"),
            ("llama3:8b!", "tag"),
        ] {
            let e = parse_ref(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let r = parse_ref(&format!("hub/llama3:8b@sha256:{D}")).unwrap();
        assert_eq!(r.name, "hub/llama3");
        assert_eq!(r.tag.as_deref(), Some("8b"));
        assert_eq!(r.without_digest(), "hub/llama3:8b");
    }

    #[test]
    fn checks_membership_pins_duplicates_and_the_empty_list() {
        let f = parse(&format!(
            "OLLAMA_MODELS=llama3:8b,qwen2.5:7b llama3:8b\n\
             CHAT_MODEL=llama3:8b\n\
             SUMMARY_MODEL=mistral:7b\n\
             EMBED_MODEL=nomic-embed-text\n\
             DIGEST_MODEL=phi3@sha256:{D}\n\
             OTHER=not-a-model\n"
        ));
        let r = check(&f, "OLLAMA_MODELS");
        assert!(!r.ok);
        assert_eq!(lines(&r.errors), vec![3, 4, 4, 5], "{:?}", r.errors);
        assert!(r.errors[0]
            .message
            .contains("SUMMARY_MODEL = mistral:7b is not in OLLAMA_MODELS"));
        assert!(r.errors[1].message.contains("not pinned"), "{:?}", r.errors);
        assert_eq!(lines(&r.warnings), vec![1]);
        assert!(r.warnings[0].message.contains("llama3:8b more than once"));
        let names: Vec<_> = r.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(names, ["llama3:8b", "qwen2.5:7b"]);
        assert_eq!(r.models[0].used_by, ["CHAT_MODEL"]);

        let good = check(
            &parse("OLLAMA_MODELS=\"a:1 b:2\"\nCHAT_MODEL=b:2\n"),
            "OLLAMA_MODELS",
        );
        assert!(good.ok && good.errors.is_empty(), "{good:?}");

        let empty = check(&parse("# nothing\nOLLAMA_MODELS= , \n"), "OLLAMA_MODELS");
        assert_eq!(lines(&empty.errors), vec![2]);
        assert!(empty.errors[0].message.contains("empty"));
        let missing = check(&parse("CHAT_MODEL=a:1\n"), "OLLAMA_MODELS");
        assert_eq!(missing.errors.len(), 1, "{:?}", missing.errors);
        assert!(missing.errors[0].line.is_none());
        let other = check(&parse("MY_LIST=a:1\nCHAT_MODEL=a:1\n"), "MY_LIST");
        assert!(other.ok, "{other:?}");
    }

    #[test]
    fn server_matching_rule() {
        let server: Vec<String> = ["gemma3-270m", "llama3:latest", "qwen2.5:7b", "hub/x:1"]
            .map(String::from)
            .to_vec();
        let found =
            |r: &str| find_on_server(r, &server).map(|(id, note)| (id.clone(), note.is_some()));
        assert_eq!(found("qwen2.5:7b"), Some(("qwen2.5:7b".into(), false)));
        assert_eq!(
            found(&format!("qwen2.5:7b@sha256:{D}")),
            Some(("qwen2.5:7b".into(), true))
        );
        // An untagged alias: the name matches, the tag cannot be verified.
        assert_eq!(found("gemma3-270m:q4"), Some(("gemma3-270m".into(), true)));
        assert_eq!(
            found(&format!("gemma3-270m@sha256:{D}")),
            Some(("gemma3-270m".into(), true))
        );
        // Tagged ids must carry the same tag; no implicit :latest.
        assert_eq!(found("llama3:8b"), None);
        assert_eq!(found("qwen2.5:14b"), None);
        assert_eq!(found("hub/x:2"), None);
        assert_eq!(found("mistral:7b"), None);

        let mut r = check(
            &parse("OLLAMA_MODELS=gemma3-270m:q4 llama3:8b\n"),
            "OLLAMA_MODELS",
        );
        check_server(&mut r, &server, "http://h/v1");
        assert!(!r.ok);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0]
            .message
            .starts_with("llama3:8b is not served by the LLM server at http://h/v1"));
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.models[0].server_id, Some(Some("gemma3-270m".into())));
        assert_eq!(r.models[1].server_id, Some(None));
    }

    // ---- property tests -----------------------------------------------------

    fn value_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::char::range('a', 'z'),
                2 => Just(' '),
                1 => Just('\t'),
                1 => Just('#'),
                1 => Just('\''),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('='),
                1 => Just(':'),
                1 => Just('@'),
                1 => Just('\n'),
                1 => Just('é'),
                1 => Just('✓'),
            ],
            0..24,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn unquoted_ok(v: &str) -> bool {
        !v.contains(['\n', '\r'])
            && !v.starts_with(['\'', '"', '#'])
            && v == v.trim_matches(is_space)
            && !v.contains(" #")
            && !v.contains("\t#")
    }

    fn double_quote(v: &str) -> String {
        let mut s = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' if v.contains('a') => s.push_str("\\t"),
                c => s.push(c),
            }
        }
        s.push('"');
        s
    }

    /// One `KEY=VALUE` line, rendered with the given style choices.
    fn render(
        k: &str,
        v: &str,
        style: u8,
        ws: (u8, u8, u8),
        export: bool,
        comment: bool,
    ) -> String {
        let sp = |n: u8| [" ", "\t", "", "  "][n as usize % 4];
        let rendered = match style % 3 {
            0 if unquoted_ok(v) => v.to_string(),
            1 if !v.contains(['\'', '\n', '\r']) => format!("'{v}'"),
            _ => double_quote(v),
        };
        let mut line = String::new();
        line.push_str(sp(ws.0));
        if export {
            line.push_str("export ");
        }
        line.push_str(k);
        line.push_str(sp(ws.1));
        line.push('=');
        line.push_str(sp(ws.2));
        line.push_str(&rendered);
        if comment {
            // An inline comment needs whitespace before its '#'.
            line.push_str(" # note = 'x' \"y");
        }
        line
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn rendered_files_parse_back_to_the_same_map(
            vars in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", value_strategy(), 0..8),
            styles in proptest::collection::vec((0u8..3, (0u8..4, 0u8..4, 0u8..4), any::<bool>(), any::<bool>()), 8),
            noise in proptest::collection::vec(0u8..4, 8),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let mut lines = Vec::new();
            for (i, (k, v)) in vars.iter().enumerate() {
                let (style, ws, export, comment) = styles[i];
                match noise[i] {
                    1 => lines.push(String::new()),
                    2 => lines.push("  # a comment line with KEY=VALUE and 'quotes".to_string()),
                    _ => {}
                }
                lines.push(render(k, v, style, ws, export, comment));
            }
            let eol = if crlf { "\r\n" } else { "\n" };
            let text = format!("{}{}{eol}", if bom { "\u{feff}" } else { "" }, lines.join(eol));
            let f = parse(&text);
            prop_assert!(f.errors.is_empty(), "{:?} in {:?}", f.errors, text);
            prop_assert_eq!(map(&f), vars);
        }

        #[test]
        fn arbitrary_input_never_panics(text in "\\PC*") {
            let f = parse(&text);
            let _ = check(&f, "OLLAMA_MODELS");
        }

        #[test]
        fn quote_heavy_input_never_panics(text in "[a-zA-Z_= #'\"\\\\\r\n\t\u{feff}é]{0,120}") {
            let f = parse(&text);
            for v in &f.vars {
                let _ = parse_ref(&v.value);
                let _ = list_items(&v.value);
            }
            let mut r = check(&f, "A");
            check_server(&mut r, &["a".to_string(), "b:1".to_string()], "http://h");
        }

        #[test]
        fn references_never_panic(s in "\\PC{0,80}") {
            let _ = parse_ref(&s);
            let _ = find_on_server(&s, &["x".to_string(), s.clone()]);
        }
    }
}
