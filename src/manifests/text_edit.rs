//! Sets annotations (and fields of list items, such as a Service port's `appProtocol`) in a
//! block-style YAML document by editing its lines, so that comments, quoting and layout survive. Only the common shapes are handled; the caller checks the result
//! by parsing it and falls back to re-serialising the document when it is not exactly right.

/// One meaningful line: its indentation and, when it opens or holds a mapping entry, the key
/// and what follows the colon.
struct Entry<'a> {
    index: usize,
    indent: usize,
    key: Option<&'a str>,
    rest: &'a str,
}

fn entries<'a>(lines: &[&'a str]) -> Vec<Entry<'a>> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(index, line)| {
            let content = line.trim_end().trim_start_matches(' ');
            if content.is_empty()
                || content.starts_with('#')
                || content.starts_with("---")
                || content.starts_with("...")
            {
                return None;
            }
            let indent = line.len() - line.trim_start_matches(' ').len();
            let (key, rest) = match split_key(content) {
                Some((key, rest)) => (Some(key), rest),
                None => (None, content),
            };
            Some(Entry {
                index,
                indent,
                key,
                rest,
            })
        })
        .collect()
}

/// `key: rest` → (unquoted key, rest); `None` for sequence items, scalars and flow collections.
fn split_key(content: &str) -> Option<(&str, &str)> {
    if content.starts_with(['-', '{', '[', '?', '&', '*', '!', '|', '>']) {
        return None;
    }
    let (key, rest) = match content.as_bytes()[0] {
        quote @ (b'"' | b'\'') => {
            let close = content[1..].find(quote as char)? + 1;
            (&content[1..close], content[close + 1..].strip_prefix(':')?)
        }
        _ => {
            let colon = content
                .find(": ")
                .or_else(|| content.strip_suffix(':').map(|k| k.len()))?;
            (&content[..colon], &content[colon + 1..])
        }
    };
    (rest.is_empty() || rest.starts_with(' ')).then_some((key.trim_end(), rest.trim()))
}

/// True when what follows a key's colon opens a block (nothing, or only a comment).
fn opens_block(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with('#')
}

/// The entry at `path` (keys from the root, block mappings only) and where its children end.
fn find(entries: &[Entry<'_>], path: &[&str]) -> Option<(usize, usize)> {
    let mut start = 0;
    let mut end = entries.len();
    let mut indent = 0;
    let mut found = None;
    for (depth, key) in path.iter().enumerate() {
        let child_indent = match depth {
            0 => 0,
            _ if start < end => entries[start].indent,
            _ => return None,
        };
        if depth > 0 && child_indent <= indent {
            return None;
        }
        let position = (start..end)
            .find(|&i| entries[i].indent == child_indent && entries[i].key == Some(key))?;
        indent = child_indent;
        let block_end = (position + 1..end)
            .find(|&i| entries[i].indent <= indent)
            .unwrap_or(end);
        found = Some((position, block_end));
        (start, end) = (position + 1, block_end);
    }
    found
}

/// Sets each `(key, value)` under the mapping at `path`'s `annotations`, creating what is
/// missing; `None` when the document's shape is not one this edit handles.
pub fn set_annotations(
    document: &str,
    metadata_path: &[&str],
    annotations: &[(&str, &str)],
) -> Option<String> {
    let lines: Vec<&str> = document.split_inclusive('\n').collect();
    let entries = entries(&lines);
    let eol = line_ending(document);
    let entry_line = |key: &str, value: &str, indent: usize| {
        format!("{}{key}: \"{value}\"{eol}", " ".repeat(indent))
    };
    // Insert before line index -> text; replace line index -> text.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut replaces: Vec<(usize, String)> = Vec::new();

    let (parent_path, _) = metadata_path.split_at(metadata_path.len().checked_sub(1)?);
    match find(&entries, metadata_path) {
        Some((metadata, metadata_end)) => {
            if !opens_block(entries[metadata].rest) || metadata_end == metadata + 1 {
                return None;
            }
            let child_indent = entries[metadata + 1].indent;
            let annotations_path: Vec<&str> = metadata_path
                .iter()
                .copied()
                .chain(["annotations"])
                .collect();
            match find(&entries, &annotations_path) {
                Some((block, block_end)) => {
                    if !opens_block(entries[block].rest) || block_end == block + 1 {
                        return None;
                    }
                    let indent = entries[block + 1].indent;
                    let after = line_after(&entries, block_end - 1, &lines);
                    for (key, value) in annotations {
                        let existing = (block + 1..block_end)
                            .find(|&i| entries[i].indent == indent && entries[i].key == Some(key));
                        match existing {
                            Some(i) if entries[i].rest.starts_with(['|', '>']) => return None,
                            Some(i) => {
                                replaces.push((entries[i].index, entry_line(key, value, indent)))
                            }
                            None => inserts.push((after, entry_line(key, value, indent))),
                        }
                    }
                }
                None => {
                    let after = line_after(&entries, metadata_end - 1, &lines);
                    let mut block = format!("{}annotations:{eol}", " ".repeat(child_indent));
                    for (key, value) in annotations {
                        block.push_str(&entry_line(key, value, child_indent + 2));
                    }
                    inserts.push((after, block));
                }
            }
        }
        None if !parent_path.is_empty() => {
            let (parent, parent_end) = find(&entries, parent_path)?;
            if !opens_block(entries[parent].rest) || parent_end == parent + 1 {
                return None;
            }
            let indent = entries[parent + 1].indent;
            let mut block = format!(
                "{}metadata:{eol}{}annotations:{eol}",
                " ".repeat(indent),
                " ".repeat(indent + 2)
            );
            for (key, value) in annotations {
                block.push_str(&entry_line(key, value, indent + 4));
            }
            inserts.push((entries[parent + 1].index, block));
        }
        None => return None,
    }

    Some(assemble(&lines, &inserts, &replaces, eol))
}

/// Adds `key: value` to item `index` of the block sequence at `list_path`, for each
/// `(index, key, value)`; `None` when the shape is not one this edit handles (flow items, an
/// item that already has the key, ...).
pub fn set_list_item_fields(
    document: &str,
    list_path: &[&str],
    fields: &[(usize, &str, &str)],
) -> Option<String> {
    let lines: Vec<&str> = document.split_inclusive('\n').collect();
    let entries = entries(&lines);
    let eol = line_ending(document);
    let (list, _) = find(&entries, list_path)?;
    let first = entries.get(list + 1)?;
    if !opens_block(entries[list].rest) || first.indent < entries[list].indent {
        return None;
    }
    // A sequence may sit at its key's own indentation, so its end is found here, not by `find`.
    let item_indent = first.indent;
    let is_item = |entry: &Entry<'_>| entry.indent == item_indent && entry.rest.starts_with('-');
    let end = (list + 1..entries.len())
        .find(|&i| {
            entries[i].indent < item_indent
                || (entries[i].indent == item_indent && !is_item(&entries[i]))
        })
        .unwrap_or(entries.len());
    let items: Vec<usize> = (list + 1..end).filter(|&i| is_item(&entries[i])).collect();
    let mut inserts = Vec::new();
    for &(index, key, value) in fields {
        let start = *items.get(index)?;
        let item_end = items.get(index + 1).copied().unwrap_or(end);
        let after_dash = entries[start].rest.strip_prefix('-')?;
        let body = after_dash.trim_start();
        let (first_key, _) = split_key(body)?;
        let key_indent = item_indent + 1 + (after_dash.len() - body.len());
        let has_key = first_key == key
            || (start + 1..item_end)
                .any(|i| entries[i].indent == key_indent && entries[i].key == Some(key));
        if has_key {
            return None;
        }
        let value = match value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            true => value.to_string(),
            false => format!("\"{value}\""),
        };
        inserts.push((
            line_after(&entries, item_end - 1, &lines),
            format!("{}{key}: {value}{eol}", " ".repeat(key_indent)),
        ));
    }
    Some(assemble(&lines, &inserts, &[], eol))
}

fn line_ending(document: &str) -> &'static str {
    if document.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// `lines` with `inserts` (text before a line index) and `replaces` (text instead of a line).
fn assemble(
    lines: &[&str],
    inserts: &[(usize, String)],
    replaces: &[(usize, String)],
    eol: &str,
) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len()).sum::<usize>() + 256);
    for (index, line) in lines.iter().enumerate() {
        for (_, text) in inserts.iter().filter(|(at, _)| *at == index) {
            out.push_str(text);
        }
        match replaces.iter().find(|(at, _)| *at == index) {
            Some((_, text)) => out.push_str(text),
            None => out.push_str(line),
        }
    }
    if !out.ends_with('\n') && inserts.iter().any(|(at, _)| *at == lines.len()) {
        out.push_str(eol);
    }
    for (_, text) in inserts.iter().filter(|(at, _)| *at == lines.len()) {
        out.push_str(text);
    }
    out
}

/// The line index just after entry `last` and its continuation lines (multi-line values).
fn line_after(entries: &[Entry<'_>], last: usize, lines: &[&str]) -> usize {
    entries.get(last + 1).map_or(lines.len(), |next| {
        // Keep comments and blank lines that precede the next entry with it.
        let blank_or_comment = |line: &str| line.trim().is_empty() || line.trim().starts_with('#');
        let mut at = next.index;
        while at > entries[last].index + 1 && blank_or_comment(lines[at - 1]) {
            at -= 1;
        }
        at
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "traffic.sidecar.istio.io/excludeInboundPorts";

    #[test]
    fn adds_to_an_existing_annotations_block_keeping_comments() {
        let doc = "kind: Deployment\nspec:\n  template:\n    metadata:\n      # why\n      annotations:\n        a: \"1\" # keep\n    spec: {}\n";
        let edited =
            set_annotations(doc, &["spec", "template", "metadata"], &[(KEY, "25")]).unwrap();
        assert_eq!(
            edited,
            format!(
                "kind: Deployment\nspec:\n  template:\n    metadata:\n      # why\n      annotations:\n        a: \"1\" # keep\n        {KEY}: \"25\"\n    spec: {{}}\n"
            )
        );
    }

    #[test]
    fn replaces_an_existing_value() {
        let doc = format!("metadata:\n  annotations:\n    '{KEY}': 9090\n    b: c\nspec: {{}}\n");
        let edited = set_annotations(&doc, &["metadata"], &[(KEY, "25,9090")]).unwrap();
        assert_eq!(
            edited,
            format!("metadata:\n  annotations:\n    {KEY}: \"25,9090\"\n    b: c\nspec: {{}}\n")
        );
    }

    #[test]
    fn creates_annotations_and_metadata() {
        let doc = "spec:\n  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers: []\n";
        let edited =
            set_annotations(doc, &["spec", "template", "metadata"], &[("k", "1")]).unwrap();
        assert_eq!(
            edited,
            "spec:\n  template:\n    metadata:\n      labels:\n        app: x\n      annotations:\n        k: \"1\"\n    spec:\n      containers: []\n"
        );
        let doc = "spec:\n  template:\n    spec:\n      containers: []\n";
        let edited =
            set_annotations(doc, &["spec", "template", "metadata"], &[("k", "1")]).unwrap();
        assert_eq!(
            edited,
            "spec:\n  template:\n    metadata:\n      annotations:\n        k: \"1\"\n    spec:\n      containers: []\n"
        );
    }

    #[test]
    fn declines_flow_style() {
        let doc = "metadata: {name: x}\nspec: {}\n";
        assert!(set_annotations(doc, &["metadata"], &[("k", "1")]).is_none());
        let doc = "metadata:\n  annotations: {a: b}\n";
        assert!(set_annotations(doc, &["metadata"], &[("k", "1")]).is_none());
    }
    #[test]
    fn adds_fields_to_list_items_keeping_comments() {
        let doc = "kind: Service\nspec:\n  ports:\n    # web\n    - name: http\n      port: 80\n    # mail\n    - name: submission # MSA\n      port: 587\n  selector:\n    app: mox\n";
        let edited =
            set_list_item_fields(doc, &["spec", "ports"], &[(1, "appProtocol", "tcp")]).unwrap();
        assert_eq!(
            edited,
            "kind: Service\nspec:\n  ports:\n    # web\n    - name: http\n      port: 80\n    # mail\n    - name: submission # MSA\n      port: 587\n      appProtocol: tcp\n  selector:\n    app: mox\n"
        );
        // A sequence at its key's indentation, the item last in the document.
        let doc = "spec:\n  ports:\n  - port: 110\n    name: pop3\n  - port: 143\n";
        let edited = set_list_item_fields(
            doc,
            &["spec", "ports"],
            &[(0, "appProtocol", "tcp"), (1, "appProtocol", "tcp")],
        )
        .unwrap();
        assert_eq!(
            edited,
            "spec:\n  ports:\n  - port: 110\n    name: pop3\n    appProtocol: tcp\n  - port: 143\n    appProtocol: tcp\n"
        );
    }

    #[test]
    fn list_item_shapes_it_does_not_handle() {
        for (doc, index) in [
            ("spec:\n  ports: [{port: 25}]\n", 0),
            ("spec:\n  ports:\n    - {port: 25}\n", 0),
            (
                "spec:\n  ports:\n    - port: 25\n      appProtocol: smtp\n",
                0,
            ),
            ("spec:\n  ports:\n    - port: 25\n", 1),
            ("spec:\n  selector: {}\n", 0),
        ] {
            assert_eq!(
                set_list_item_fields(doc, &["spec", "ports"], &[(index, "appProtocol", "tcp")]),
                None,
                "{doc}"
            );
        }
    }
}
