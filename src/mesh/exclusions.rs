//! Exclusion lists shared by the mesh profiles: merge ports into a comma-separated list without
//! dropping or rewriting what is there beyond the canonical form.

use crate::ports::{PortListError, PortSet};

/// What a mesh accepts in its port lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Decimal ports only (Istio, Kuma, Consul).
    Ports,
    /// Ports and inclusive ranges `a-b` (Linkerd).
    PortsAndRanges,
}

/// One element of a list: a port is the range `(p, p)`.
type Element = (u16, u16);

/// Parses `list` by `syntax`: trimmed elements separated by `,`; blank is the empty list.
pub fn parse(list: &str, syntax: Syntax) -> Result<Vec<Element>, PortListError> {
    let trimmed = list.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let invalid = |element: &str| PortListError {
        list: list.to_string(),
        element: element.to_string(),
    };
    trimmed
        .split(',')
        .map(|element| {
            let element = element.trim();
            let port = |text: &str| {
                let decimal = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                decimal.then(|| text.parse::<u16>().ok()).flatten()
            };
            let range = match (syntax, element.split_once('-')) {
                (Syntax::PortsAndRanges, Some((start, end))) => {
                    port(start).zip(port(end)).filter(|(s, e)| s <= e)
                }
                (_, None) => port(element).map(|p| (p, p)),
                (Syntax::Ports, Some(_)) => None,
            };
            range.ok_or_else(|| invalid(element))
        })
        .collect()
}

/// `existing` plus the `ports` it does not cover, sorted, as a list; `None` when it covers them.
pub fn merged(existing: &[Element], ports: &PortSet) -> Option<String> {
    let covered = |port: u16| {
        existing
            .iter()
            .any(|&(start, end)| (start..=end).contains(&port))
    };
    let missing: Vec<Element> = ports
        .iter()
        .copied()
        .filter(|&p| !covered(p))
        .map(|p| (p, p))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let elements: Vec<Element> = existing.iter().copied().chain(missing).collect();
    Some(canonical(&elements))
}

/// `elements` as a sorted list without repeats.
pub fn canonical(elements: &[Element]) -> String {
    let mut elements = elements.to_vec();
    elements.sort_unstable();
    elements.dedup();
    format(&elements)
}

/// `list` with each element that `number_of` knows as a name replaced by its number (Linkerd
/// accepts port names in its opaque-ports lists).
pub fn with_names_resolved(list: &str, number_of: impl Fn(&str) -> Option<u16>) -> String {
    list.split(',')
        .map(|element| {
            let name = element.trim();
            (!name.is_empty())
                .then(|| number_of(name))
                .flatten()
                .map_or_else(|| element.to_string(), |port| port.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn format(elements: &[Element]) -> String {
    elements
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> PortSet {
        ports.iter().copied().collect()
    }

    #[test]
    fn merge_table() {
        let cases: &[(&str, Syntax, &[u16], Option<&str>)] = &[
            ("", Syntax::Ports, &[587, 25], Some("25,587")),
            (" 9090, 8080 ", Syntax::Ports, &[25], Some("25,8080,9090")),
            ("587,25", Syntax::Ports, &[25, 587], None),
            ("25,25", Syntax::Ports, &[587], Some("25,587")),
            ("4190-4191,25", Syntax::PortsAndRanges, &[25, 4190], None),
            (
                "20-30",
                Syntax::PortsAndRanges,
                &[25, 587],
                Some("20-30,587"),
            ),
            (
                "1000-2000, 80",
                Syntax::PortsAndRanges,
                &[25],
                Some("25,80,1000-2000"),
            ),
        ];
        for &(existing, syntax, ports, expected) in cases {
            let existing = parse(existing, syntax).unwrap();
            assert_eq!(
                merged(&existing, &set(ports)).as_deref(),
                expected,
                "{existing:?} + {ports:?}"
            );
        }
    }

    #[test]
    fn syntax_is_enforced() {
        for bad in ["25,", "*", "1-2", "a", "+1"] {
            assert!(parse(bad, Syntax::Ports).is_err(), "{bad}");
        }
        for bad in ["30-20", "1-", "-1", "1-2-3", "25,"] {
            assert!(parse(bad, Syntax::PortsAndRanges).is_err(), "{bad}");
        }
        assert_eq!(
            parse("1-2, 5", Syntax::PortsAndRanges).unwrap(),
            [(1, 2), (5, 5)]
        );
    }
}
