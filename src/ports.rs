//! Port lists as Istio writes and validates them: comma-separated decimal ports.
//!
//! Istio's injector (`validateAnnotations`) and istio-cni trim the whole value, split it on `,`,
//! trim each element and parse it as a 16-bit unsigned integer; anything else rejects the pod.
//! We parse existing values by the same rule and always write the canonical form.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A set of TCP ports, iterated in ascending order.
pub type PortSet = BTreeSet<u16>;

/// An element of a port list that Istio would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port {element:?} in port list {list:?}: expected comma-separated decimal ports")]
pub struct PortListError {
    pub list: String,
    pub element: String,
}

/// Parses a port list by Istio's rule: the empty (or blank) string is the empty list.
pub fn parse_port_list(list: &str) -> Result<Vec<u16>, PortListError> {
    let trimmed = list.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split(',')
        .map(|element| {
            let element = element.trim();
            // `u16::from_str` accepts a leading `+`; Go's ParseUint does not.
            let decimal = !element.is_empty() && element.bytes().all(|b| b.is_ascii_digit());
            decimal
                .then(|| element.parse().ok())
                .flatten()
                .ok_or_else(|| PortListError {
                    list: list.to_string(),
                    element: element.to_string(),
                })
        })
        .collect()
}

/// Parses a list of ports for matching: like [`parse_port_list`] but port 0 is rejected too.
pub fn parse_nonzero_port_list(list: &str) -> Result<Vec<u16>, PortListError> {
    let ports = parse_port_list(list)?;
    match ports.contains(&0) {
        true => Err(PortListError {
            list: list.to_string(),
            element: "0".to_string(),
        }),
        false => Ok(ports),
    }
}

/// Formats ports in the order given, comma-separated, without spaces.
pub fn format_port_list<I: IntoIterator<Item = u16>>(ports: I) -> String {
    let mut out = String::new();
    for port in ports {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{port}");
    }
    out
}

/// Ports grouped by what is said of them (a reason, a policy), groups in the text's order.
pub fn by_reason<R: std::fmt::Display>(
    ports: impl IntoIterator<Item = (u16, R)>,
) -> std::collections::BTreeMap<String, PortSet> {
    let mut groups = std::collections::BTreeMap::<String, PortSet>::new();
    for (port, reason) in ports {
        groups.entry(reason.to_string()).or_default().insert(port);
    }
    groups
}

/// Ports for prose: `port 25`, `ports 25,465,587`, ascending as in the annotations, with runs
/// of three or more consecutive ports written `30000-30049` (FTP passive ranges are long).
pub fn phrase<I: IntoIterator<Item = u16>>(ports: I) -> String {
    let ports: PortSet = ports.into_iter().collect();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for port in ports.iter().copied() {
        match runs.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(port) => *end = port,
            _ => runs.push((port, port)),
        }
    }
    let mut list = String::new();
    for (start, end) in runs {
        let run = match end - start {
            0 => format!("{start}"),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        };
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(&run);
    }
    match ports.len() {
        1 => format!("port {list}"),
        _ => format!("ports {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_sorted_with_singular_or_plural() {
        assert_eq!(phrase([25]), "port 25");
        assert_eq!(phrase([587, 25, 465]), "ports 25,465,587");
        assert_eq!(phrase([26, 25]), "ports 25,26");
        assert_eq!(
            phrase([21, 30002, 30000, 30001, 30003, 40000]),
            "ports 21,30000-30003,40000"
        );
        assert_eq!(phrase([65535, 65534, 65533]), "ports 65533-65535");
    }

    #[test]
    fn parses_like_istio() {
        let cases: &[(&str, Option<&[u16]>)] = &[
            ("", Some(&[])),
            ("   ", Some(&[])),
            ("25", Some(&[25])),
            ("587, 25", Some(&[587, 25])),
            (" 15020 ,25 ", Some(&[15020, 25])),
            ("0", Some(&[0])),
            ("65535", Some(&[65535])),
            ("65536", None),
            ("25,", None),
            (",25", None),
            ("25,,587", None),
            ("1000-2000", None),
            ("*", None),
            ("+25", None),
            ("-1", None),
            ("smtp", None),
            ("25 587", None),
        ];
        for (input, expected) in cases {
            let parsed = parse_port_list(input);
            assert_eq!(parsed.as_deref().ok(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn error_names_the_bad_element() {
        let error = parse_port_list("25,abc").unwrap_err();
        assert_eq!(error.element, "abc");
        assert!(error.to_string().contains("\"abc\""));
    }

    #[test]
    fn nonzero_list_rejects_port_zero() {
        assert!(parse_nonzero_port_list("25,0").is_err());
        assert_eq!(
            parse_nonzero_port_list("2525,10025").unwrap(),
            [2525, 10025]
        );
    }

    #[test]
    fn formats_without_spaces() {
        assert_eq!(format_port_list([]), "");
        assert_eq!(format_port_list([25]), "25");
        assert_eq!(format_port_list([25, 587, 15020]), "25,587,15020");
    }
}
