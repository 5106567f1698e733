//! A YAML (or JSON) stream split into its documents, each parsed on its own, with errors in
//! the words of someone who edits manifests, not of the parser.

use serde_json::Value;

/// One YAML document of a stream, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDocument<'a> {
    pub line: usize,
    pub text: &'a str,
}

/// Splits a YAML stream at `---` document markers (kept with the document they open).
///
/// Comments and blank lines before the first marker belong to the first document, as YAML
/// counts them: `# c\n---\nkind: Pod` is one document.
pub fn split_documents(stream: &str) -> Vec<RawDocument<'_>> {
    let mut documents = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (number, line) in stream.split_inclusive('\n').enumerate() {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        let prologue = documents.is_empty()
            && stream[start..offset]
                .lines()
                .all(|l| is_blank_or_comment(l.trim()));
        if marker && offset > start && !prologue {
            documents.push(RawDocument {
                line: start_line,
                text: &stream[start..offset],
            });
            (start, start_line) = (offset, number + 1);
        }
        offset += line.len();
    }
    if offset > start || documents.is_empty() {
        documents.push(RawDocument {
            line: start_line,
            text: &stream[start..],
        });
    }
    documents
}

/// A document that cannot be read: what is wrong, and what can still be told of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub message: String,
    /// `kind` and `metadata.name` as far as a plain look at the lines finds them.
    pub kind: String,
    pub name: String,
}

/// Parses one document; `Ok(None)` when it holds nothing (comments, bare markers).
pub fn parse_document(document: &RawDocument<'_>) -> Result<Option<Value>, Unreadable> {
    if document.text.lines().all(|l| is_blank_or_marker(l.trim())) {
        return Ok(None);
    }
    let value: Value = serde_saphyr::from_str(document.text).map_err(|error| {
        let (kind, name) = identity(document.text);
        Unreadable {
            message: yaml_error(document, &error),
            kind,
            name,
        }
    })?;
    Ok((!value.is_null()).then_some(value))
}

/// A one-line message with the line number in the file, not in the document.
fn yaml_error(document: &RawDocument<'_>, error: &serde_saphyr::Error) -> String {
    let message = error.without_snippet().to_string();
    let Some(location) = error.location() else {
        return format!("invalid YAML: {}", in_user_terms(&message));
    };
    let reason = message
        .split_once("column ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map_or(message.as_str(), |(_, reason)| reason);
    let reason = reason
        .rsplit_once(" at line ")
        .map_or(reason, |(reason, _)| reason);
    let line = document.line
        + usize::try_from(location.line())
            .unwrap_or(1)
            .saturating_sub(1);
    format!(
        "invalid YAML at line {line}, column {}: {}",
        location.column(),
        in_user_terms(reason)
    )
}

/// The parser's reason as someone editing the file would put it; hints addressed to users of
/// the parser's API (`set DuplicateKeyPolicy in Options`) are dropped.
fn in_user_terms(reason: &str) -> String {
    let reason = reason.split(", set ").next().unwrap_or(reason).trim();
    if let Some(key) = reason.strip_prefix("duplicate mapping key: ") {
        return format!("key {key:?} appears twice in the same mapping");
    }
    let known = [
        (
            "tabs disallowed",
            "a tab is used for indentation; YAML indents with spaces",
        ),
        (
            "did not find expected key",
            "this line is not indented like the keys above it",
        ),
        (
            "mapping values are not allowed",
            "a `key: value` where none can be: check the indentation, or quote a value that contains \": \"",
        ),
        ("unclosed quote", "a quoted string is not closed"),
        (
            "alias references unknown anchor",
            "an alias (*name) refers to an anchor (&name) that is not defined",
        ),
    ];
    known
        .iter()
        .find(|(parser, _)| reason.contains(parser))
        .map_or_else(|| reason.to_string(), |(_, user)| user.to_string())
}

/// `kind` and `metadata.name` of a document that does not parse, read off its lines: a top-level
/// `kind:` and the first `name:` one level under a top-level `metadata:`.
fn identity(text: &str) -> (String, String) {
    let scalar = |value: &str| {
        let value = value.split(" #").next().unwrap_or_default().trim();
        value.trim_matches(|c| c == '"' || c == '\'').to_string()
    };
    let (mut kind, mut name) = (String::new(), String::new());
    let mut in_metadata = false;
    let mut child_indent = None;
    for line in text.lines() {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_metadata = content.trim_end() == "metadata:";
            child_indent = None;
            if let Some(value) = content.strip_prefix("kind:") {
                kind = scalar(value);
            }
            continue;
        }
        if in_metadata
            && name.is_empty()
            && *child_indent.get_or_insert(indent) == indent
            && let Some(value) = content.strip_prefix("name:")
        {
            name = scalar(value);
        }
    }
    (kind, name)
}

fn is_blank_or_comment(line: &str) -> bool {
    line.is_empty() || line.starts_with('#') || line.starts_with('%')
}

fn is_blank_or_marker(line: &str) -> bool {
    line.is_empty()
        || line.starts_with('#')
        || line == "---"
        || line == "..."
        || line.starts_with("--- #")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable(text: &str) -> Unreadable {
        parse_document(&RawDocument { line: 1, text }).unwrap_err()
    }

    #[test]
    fn errors_name_the_object_and_say_what_is_wrong() {
        let duplicate = unreadable(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: mox\n  labels:\n    app: mox\n    app: mail\nspec: {}\n",
        );
        assert_eq!(
            (duplicate.kind.as_str(), duplicate.name.as_str()),
            ("Deployment", "mox")
        );
        assert_eq!(
            duplicate.message,
            "invalid YAML at line 7, column 5: key \"app\" appears twice in the same mapping"
        );
        assert!(!duplicate.message.contains("Options"));
        let tab =
            unreadable("kind: Pod\nmetadata:\n  name: 'smtp' # the relay\n  labels:\n\ta: b\n");
        assert_eq!((tab.kind.as_str(), tab.name.as_str()), ("Pod", "smtp"));
        assert!(
            tab.message.contains("a tab is used for indentation"),
            "{}",
            tab.message
        );
        let nameless = unreadable("kind: Service\nspec: [\n");
        assert_eq!(
            (nameless.kind.as_str(), nameless.name.as_str()),
            ("Service", "")
        );
    }

    #[test]
    fn splits_at_document_markers_only() {
        let stream = "a: 1\n---\nb: 2\n--- # comment\nc: |\n  ---x\n---\n";
        let docs = split_documents(stream);
        let texts: Vec<(usize, &str)> = docs.iter().map(|d| (d.line, d.text)).collect();
        assert_eq!(
            texts,
            [
                (1, "a: 1\n"),
                (2, "---\nb: 2\n"),
                (4, "--- # comment\nc: |\n  ---x\n"),
                (7, "---\n")
            ]
        );
        assert_eq!(split_documents("").len(), 1);
        assert_eq!(split_documents("---\na: 1\n")[0].text, "---\na: 1\n");
    }

    #[test]
    fn a_leading_comment_block_belongs_to_the_first_document() {
        let stream = "# Source: chart/templates/pod.yaml\n\n---\nkind: Pod\n---\nkind: Service\n";
        let docs = split_documents(stream);
        let texts: Vec<(usize, &str)> = docs.iter().map(|d| (d.line, d.text)).collect();
        assert_eq!(
            texts,
            [
                (1, "# Source: chart/templates/pod.yaml\n\n---\nkind: Pod\n"),
                (5, "---\nkind: Service\n")
            ]
        );
        // Content before the first marker is a document of its own.
        assert_eq!(split_documents("a: 1\n---\nb: 2\n").len(), 2);
        // An explicit empty document stays one.
        assert_eq!(split_documents("---\n# c\n---\na: 1\n").len(), 2);
    }

    #[test]
    fn empty_documents_hold_nothing() {
        for text in ["", "---\n", "# only a comment\n", "---\n...\n", "null\n"] {
            assert_eq!(
                parse_document(&RawDocument { line: 1, text }),
                Ok(None),
                "{text:?}"
            );
        }
    }
}
