//! Markdown pages read as mdBook reads them: the same pulldown-cmark options, and heading ids by
//! mdBook's rule, so that a link's `#anchor` is checked against the id the built page will have.

use std::collections::HashSet;
use std::path::Path;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The options of mdBook 0.5's parser as docs/book.toml sets it up (definition lists and
/// admonitions on, smart punctuation off): rust-lang/mdBook `crates/mdbook-markdown/src/lib.rs`,
/// `new_cmark_parser`.
pub fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_DEFINITION_LIST
        | Options::ENABLE_GFM
}

/// The line of docs/book.toml that [`options`] assumes.
pub const BOOK_TOML_PUNCTUATION: &str = "smart-punctuation = false";

/// mdBook's id for a heading's text: rust-lang/mdBook `crates/mdbook-html/src/utils.rs`,
/// `id_from_content` (v0.5.4): trimmed, lowercased, alphanumerics, `_` and `-` kept, whitespace
/// turned into `-`, everything else dropped.
pub fn id_from_content(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|ch| match ch {
            ch if ch.is_alphanumeric() || ch == '_' || ch == '-' => Some(ch),
            ch if ch.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// mdBook's `unique_id` (same file): a repeated id gets `-1`, `-2`, … on one page.
fn unique_id(id: String, used: &mut HashSet<String>) -> String {
    if used.insert(id.clone()) {
        return id;
    }
    (1..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| used.insert(candidate.clone()))
        .expect("an unused suffix")
}

/// A link or image target in a page, and the line it is on.
#[derive(Debug)]
pub struct Link {
    pub target: String,
    pub line: usize,
}

/// What a page offers to links (its ids) and what it links to.
#[derive(Debug)]
pub struct Page {
    pub ids: HashSet<String>,
    pub links: Vec<Link>,
    /// The text of each table's first column, row by row: (the cell's inline code, if the cell
    /// is one code span and nothing else; the cell's whole text).
    pub first_cells: Vec<(Option<String>, String)>,
    /// Each table row as its cells' text.
    pub rows: Vec<Vec<String>>,
}

/// Reads `path` as mdBook would.
pub fn read(path: &Path) -> Page {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse(&text)
}

pub fn parse(text: &str) -> Page {
    let mut page = Page {
        ids: HashSet::new(),
        links: Vec::new(),
        first_cells: Vec::new(),
        rows: Vec::new(),
    };
    // Ids generated from text share one set per page; explicit `{#id}`s are used as written
    // (mdBook's `add_header_links` in `crates/mdbook-html/src/html/tree.rs`).
    let mut generated = HashSet::new();
    let mut heading: Option<(Option<String>, String)> = None;
    let mut row: Option<Vec<String>> = None;
    let mut cell: Option<(String, usize, Option<String>)> = None;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        let line = text[..range.start].matches('\n').count() + 1;
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some((id.map(|id| id.to_string()), String::new()))
            }
            Event::Start(Tag::DefinitionListTitle) => heading = Some((None, String::new())),
            Event::End(TagEnd::Heading(_) | TagEnd::DefinitionListTitle) => {
                if let Some((explicit, content)) = heading.take() {
                    let id = match explicit {
                        Some(id) => id,
                        None => unique_id(id_from_content(&content), &mut generated),
                    };
                    page.ids.insert(id);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                page.links.push(Link {
                    target: dest_url.to_string(),
                    line,
                })
            }
            Event::Start(Tag::TableHead | Tag::TableRow) => row = Some(Vec::new()),
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                if let Some(cells) = row.take() {
                    page.rows.push(cells);
                }
            }
            Event::Start(Tag::TableCell) => cell = Some((String::new(), 0, None)),
            Event::End(TagEnd::TableCell) => {
                if let (Some(cells), Some((content, events, code))) = (row.as_mut(), cell.take()) {
                    if cells.is_empty() {
                        let only_code = if events == 1 { code } else { None };
                        page.first_cells.push((only_code, content.clone()));
                    }
                    cells.push(content);
                }
            }
            Event::Text(ref piece) | Event::Code(ref piece) => {
                if let Some((_, content)) = heading.as_mut() {
                    content.push_str(piece);
                }
                if let Some((content, events, code)) = cell.as_mut() {
                    content.push_str(piece);
                    *events += 1;
                    if let Event::Code(piece) = &event {
                        *code = Some(piece.to_string());
                    }
                }
            }
            _ => {
                if let Some((_, events, _)) = cell.as_mut() {
                    *events += 1;
                }
            }
        }
    }
    page
}

/// `target` leaves the page's site: a URL with a scheme (`https:`, `mailto:`) or `//host`.
pub fn is_external(target: &str) -> bool {
    let scheme = target.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    scheme || target.starts_with("//")
}
