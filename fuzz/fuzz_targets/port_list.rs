//! Port-list parsing: never a panic, and what parses formats back to a list that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serverfirst::ports::{format_port_list, parse_port_list};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ports) = parse_port_list(text) {
        let formatted = format_port_list(ports.iter().copied());
        assert_eq!(parse_port_list(&formatted).as_ref(), Ok(&ports));
        assert!(!formatted.contains(' '));
    }
});
