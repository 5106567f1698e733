//! The annotation and label keys serverfirst's code writes or reads, collected from its source:
//! every string literal of `src/` outside `#[cfg(test)]` items, tokenised as Rust (so comments,
//! doc comments, char literals and test modules never count), and every `serverfirst.dev/…` key
//! the chart and the install manifests use.

use std::collections::BTreeSet;
use std::path::Path;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The domains of the keys that matter: serverfirst's own and the meshes' and Kubernetes' that
/// decisions read or write.
const DOMAINS: [&str; 6] = [
    "serverfirst.dev",
    "istio.io",
    "linkerd.io",
    "kuma.io",
    "hashicorp.com",
    "kubernetes.io",
];

/// Strings of those domains that are values, not keys.
pub const NOT_KEYS: [(&str, &str); 4] = [
    ("kubernetes.io/h2c", "an appProtocol value"),
    ("kubernetes.io/ws", "an appProtocol value"),
    ("kubernetes.io/wss", "an appProtocol value"),
    ("kubernetes.io/tls", "a Secret type"),
];

/// The keys in the string literals of the Rust files under `dir`.
pub fn from_rust_sources(dir: &Path) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for file in files(dir, "rs") {
        let text = std::fs::read_to_string(&file).unwrap();
        let tokens: TokenStream = text
            .parse()
            .unwrap_or_else(|error| panic!("{} does not tokenise: {error:?}", file.display()));
        for literal in string_literals(tokens) {
            keys.extend(keys_in(&literal, &DOMAINS));
        }
    }
    keys.retain(|key| !NOT_KEYS.iter().any(|(value, _)| value == key));
    keys
}

/// The `serverfirst.dev/…` keys in the files under `dir` (templates, manifests: any text).
pub fn serverfirst_keys_in_files(dir: &Path) -> BTreeSet<String> {
    files(dir, "")
        .into_iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| keys_in(&text, &["serverfirst.dev"]))
        .collect()
}

/// Format placeholders (`{}.service.kuma.io/protocol`) and documented ones
/// (`<port>.service.kuma.io/protocol`) compare equal.
pub fn normalise_placeholders(key: &str) -> String {
    let mut out = String::new();
    let mut inside = None;
    for ch in key.chars() {
        match (inside, ch) {
            (None, '{') => inside = Some('}'),
            (None, '<') => inside = Some('>'),
            (Some(close), ch) if ch == close => {
                inside = None;
                out.push('*');
            }
            (Some(_), _) => {}
            (None, ch) => out.push(ch),
        }
    }
    out
}

fn files(dir: &Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path, extension));
        } else if extension.is_empty() || path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The contents of the string literals in `tokens`, skipping every item marked `#[cfg(test)]`.
fn string_literals(tokens: TokenStream) -> Vec<String> {
    let mut literals = Vec::new();
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        if is_cfg_test(&tokens[i..]) {
            i = end_of_item(&tokens, i + 2);
            continue;
        }
        if let Some(after) = after_doc_comment(&tokens[i..]) {
            i += after;
            continue;
        }
        match &tokens[i] {
            TokenTree::Group(group) => literals.extend(string_literals(group.stream())),
            TokenTree::Literal(literal) => literals.extend(string_content(&literal.to_string())),
            _ => {}
        }
        i += 1;
    }
    literals
}

/// `#[cfg(test)]` starts here.
fn is_cfg_test(tokens: &[TokenTree]) -> bool {
    match tokens {
        [TokenTree::Punct(hash), TokenTree::Group(attribute), ..] => {
            hash.as_char() == '#'
                && attribute.delimiter() == Delimiter::Bracket
                && attribute.stream().to_string().replace(' ', "") == "cfg(test)"
        }
        _ => false,
    }
}

/// How many tokens a doc comment takes here (`///` and `//!` tokenise as `#[doc = "…"]`), if
/// one starts here: prose, not code.
fn after_doc_comment(tokens: &[TokenTree]) -> Option<usize> {
    let (bang, rest) = match tokens {
        [TokenTree::Punct(hash), TokenTree::Punct(bang), rest @ ..]
            if hash.as_char() == '#' && bang.as_char() == '!' =>
        {
            (1, rest)
        }
        [TokenTree::Punct(hash), rest @ ..] if hash.as_char() == '#' => (0, rest),
        _ => return None,
    };
    match rest.first() {
        Some(TokenTree::Group(attribute))
            if attribute.delimiter() == Delimiter::Bracket
                && matches!(attribute.stream().into_iter().next(),
                    Some(TokenTree::Ident(ident)) if ident == "doc") =>
        {
            Some(bang + 2)
        }
        _ => None,
    }
}

/// The index after the item that starts at `start`: after its `{ … }` body or its `;`.
fn end_of_item(tokens: &[TokenTree], start: usize) -> usize {
    let mut i = start;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) if group.delimiter() == Delimiter::Brace => return i + 1,
            TokenTree::Punct(punct) if punct.as_char() == ';' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The text of a string literal as written (`"…"`, `r#"…"#`), or nothing for other literals.
fn string_content(literal: &str) -> Option<String> {
    let raw = literal.strip_prefix('r').map(|rest| rest.trim_matches('#'));
    let quoted = raw.unwrap_or(literal);
    let content = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some(content.to_string())
}

/// The keys of `domains` in `text`: words like `traffic.sidecar.istio.io/excludeInboundPorts`,
/// with no API version (`security.istio.io/v1`) and nothing after the name.
fn keys_in(text: &str, domains: &[&str]) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || "._-/{}".contains(c);
    text.split(|c: char| !word(c))
        .filter_map(|candidate| {
            let (prefix, name) = candidate.split_once('/')?;
            let named = name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            let in_domain = domains
                .iter()
                .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")));
            (named && in_domain && !is_api_version(name)).then(|| candidate.to_string())
        })
        .collect()
}

/// `v1`, `v1beta1`, `v2alpha3`.
fn is_api_version(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('v') else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest
        .strip_prefix("alpha")
        .or_else(|| rest.strip_prefix("beta"))
        .unwrap_or(rest);
    rest.chars().all(|c| c.is_ascii_digit()) && name.len() > 1
}
