//! SMTP command parsing and the session state machine, fed any lines: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serverfirst::smtp::command::parse;
use serverfirst::smtp::data::DataDecoder;
use serverfirst::smtp::session::{Action, Session, SessionSettings};

fuzz_target!(|data: &[u8]| {
    let settings = SessionSettings { hostname: "fuzz".into(), max_message_size: 4096, max_recipients: 4, starttls: true };
    let mut session = Session::new(settings);
    let mut decoder: Option<DataDecoder> = None;
    let mut rest = data;
    while !rest.is_empty() {
        if let Some(data) = decoder.as_mut() {
            match data.feed(rest) {
                Some(used) => {
                    rest = &rest[used.min(rest.len())..];
                    decoder.take().map(DataDecoder::finish);
                    session.take_envelope();
                }
                None => return,
            }
            continue;
        }
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let _ = parse(line);
        match session.handle_line(line) {
            Action::ReceiveData(_) => decoder = Some(DataDecoder::new(4096)),
            Action::StartTls(_) => session.tls_started(),
            Action::Close(_) => return,
            Action::Reply(_) => {}
        }
    }
});
