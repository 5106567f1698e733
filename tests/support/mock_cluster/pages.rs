//! Lists in pages, as kube-apiserver's storage answers `limit` and `continue`
//! (k8s.io/apiserver pkg/storage/etcd3/store.go, `store.GetList`): a page holds at most `limit`
//! matching objects in key order; while keys remain after it, `continue` resumes right after
//! the last key looked at, at the first page's resourceVersion, and `remainingItemCount`
//! counts them when there is no selector. The token is kube-apiserver's own
//! (pkg/storage/continue.go, `EncodeContinue`: unpadded URL-safe base64 of
//! `{"v": "meta.k8s.io/v1", "rv": ..., "start": ...}`).

use base64::Engine as _;
use serde_json::{Value, json};

/// Where a continued list resumes.
#[derive(Debug, PartialEq, Eq)]
pub struct Continue {
    /// The first page's resourceVersion; `-1` after compaction: the latest.
    pub resource_version: i64,
    /// The first key to look at.
    pub start: String,
}

pub fn encode_continue(resource_version: i64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": resource_version, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

/// The token's content, or why it is not valid (with `DecodeContinue`'s messages).
pub fn decode_continue(token: &str) -> Result<Continue, String> {
    let invalid = |why: &dyn std::fmt::Display| format!("continue key is not valid: {why}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| invalid(&e))?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&e))?;
    if token["v"] != "meta.k8s.io/v1" {
        return Err(invalid(&"server does not recognize this encoded version"));
    }
    let resource_version = token["rv"].as_i64().unwrap_or(0);
    if resource_version == 0 {
        return Err(invalid(
            &"incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let start = token["start"].as_str().unwrap_or_default().to_string();
    if start.is_empty() {
        return Err(invalid(&"encoded start key empty (version meta.k8s.io/v1)"));
    }
    Ok(Continue {
        resource_version,
        start,
    })
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<'a> {
    pub items: Vec<&'a Value>,
    /// The key to resume at, while keys remain.
    pub next: Option<String>,
    /// The keys after the page.
    pub remaining: usize,
}

/// The page of `objects` (in key order, from the request's start) that `matches`, at most
/// `limit` items.
pub fn page<'a>(
    objects: impl Iterator<Item = (&'a str, &'a Value)>,
    limit: Option<usize>,
    matches: impl Fn(&Value) -> bool,
) -> Page<'a> {
    let mut objects = objects.peekable();
    let mut items = Vec::new();
    let mut last_key = None;
    while let Some((key, object)) = objects.next_if(|_| limit.is_none_or(|l| items.len() < l)) {
        last_key = Some(key);
        if matches(object) {
            items.push(object);
        }
    }
    let remaining = objects.count();
    // Right after the last key looked at, as `GetList` resumes at `lastKey + "\x00"`.
    let next = (remaining > 0).then(|| format!("{}\0", last_key.unwrap_or_default()));
    Page {
        items,
        next,
        remaining,
    }
}
