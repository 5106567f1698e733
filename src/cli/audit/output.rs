//! Rows written as pages arrive: JSON lines, one JSON array, or a table. The table keeps its
//! columns aligned by a second pass: rows go to a temporary file while the column widths grow,
//! and are printed from it at the end.

use std::io::{self, BufRead as _, BufReader, BufWriter, Seek as _, Write};

use crate::audit::AuditRow;
use crate::ports::format_port_list;
use crate::report::Columns;

pub trait RowWriter {
    fn row(&mut self, row: &AuditRow) -> io::Result<()>;
    /// Called after each page: what was written so far reaches the reader now.
    fn flush(&mut self) -> io::Result<()>;
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// `-o ndjson`: one object per line.
pub struct Ndjson<W: Write>(pub W);

impl<W: Write> RowWriter for Ndjson<W> {
    fn row(&mut self, row: &AuditRow) -> io::Result<()> {
        serde_json::to_writer(&mut self.0, row)?;
        self.0.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// `-o json`: the pretty-printed array it always was, written an element at a time.
pub struct JsonArray<W: Write> {
    out: W,
    rows: usize,
}

impl<W: Write> JsonArray<W> {
    pub fn new(out: W) -> Self {
        JsonArray { out, rows: 0 }
    }
}

impl<W: Write> RowWriter for JsonArray<W> {
    fn row(&mut self, row: &AuditRow) -> io::Result<()> {
        self.out
            .write_all(if self.rows == 0 { b"[\n" } else { b",\n" })?;
        self.rows += 1;
        let element = serde_json::to_string_pretty(row)?;
        for (index, line) in element.lines().enumerate() {
            if index > 0 {
                self.out.write_all(b"\n")?;
            }
            write!(self.out, "  {line}")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.out
            .write_all(if self.rows == 0 { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()
    }
}

const HEADER: [&str; 7] = [
    "NAMESPACE",
    "NAME",
    "OWNER",
    "STATUS",
    "PORTS",
    "RESTART",
    "FIX / NOTE",
];

/// `-o table`: rows spill to a temporary file (one JSON array of cells a line).
pub struct Table<W: Write> {
    out: W,
    columns: Columns,
    spill: BufWriter<std::fs::File>,
}

impl<W: Write> Table<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Ok(Table {
            out,
            columns: Columns::new(&HEADER),
            spill: BufWriter::new(tempfile::tempfile()?),
        })
    }
}

fn cells(row: &AuditRow) -> [String; 7] {
    [
        row.resource.namespace().to_string(),
        // `kind/name`, as kubectl names objects of several kinds.
        format!(
            "{}/{}",
            row.resource.kind().to_ascii_lowercase(),
            row.resource.name()
        ),
        row.owner
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        row.status.as_str().to_string(),
        format_port_list(row.ports.iter().copied()),
        if row.needs_restart { "yes" } else { "" }.to_string(),
        if row.fix.is_empty() {
            row.reason.clone()
        } else {
            row.fix.clone()
        },
    ]
}

impl<W: Write> RowWriter for Table<W> {
    fn row(&mut self, row: &AuditRow) -> io::Result<()> {
        let cells = cells(row);
        self.columns.fit(&cells);
        serde_json::to_writer(&mut self.spill, &cells)?;
        self.spill.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let mut spill = self
            .spill
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        spill.rewind()?;
        self.out.write_all(self.columns.line(&HEADER).as_bytes())?;
        for line in BufReader::new(spill).lines() {
            let cells: Vec<String> = serde_json::from_str(&line?)?;
            self.out.write_all(self.columns.line(&cells).as_bytes())?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditStatus, Resource};

    fn row(name: &str) -> AuditRow {
        AuditRow {
            resource: Resource::Pod {
                namespace: "mail".into(),
                pod: name.into(),
                uid: String::new(),
            },
            owner: None,
            status: AuditStatus::WouldPatch,
            ports: vec![25],
            sidecar: false,
            needs_restart: false,
            fix: "fix".into(),
            reason: String::new(),
            warnings: vec![],
            companion: String::new(),
            kept: Default::default(),
        }
    }

    fn written(
        writer: impl FnOnce(&mut Vec<u8>) -> Box<dyn RowWriter + '_>,
        rows: &[AuditRow],
    ) -> String {
        let mut out = Vec::new();
        {
            let mut writer = writer(&mut out);
            for row in rows {
                writer.row(row).unwrap();
            }
            writer.finish().unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_is_the_array_serde_would_print() {
        for rows in [vec![], vec![row("a")], vec![row("a"), row("bb")]] {
            let streamed = written(|out| Box::new(JsonArray::new(out)), &rows);
            assert_eq!(
                streamed,
                format!("{}\n", serde_json::to_string_pretty(&rows).unwrap())
            );
        }
    }

    #[test]
    fn ndjson_is_one_object_a_line() {
        let text = written(|out| Box::new(Ndjson(out)), &[row("a"), row("b")]);
        let names: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["pod"].to_string())
            .collect();
        assert_eq!(names, ["\"a\"", "\"b\""]);
    }

    #[test]
    fn table_aligns_across_the_second_pass() {
        let text = written(
            |out| Box::new(Table::new(out).unwrap()),
            &[row("a"), row("a-much-longer-name")],
        );
        let expected = crate::report::table(
            &HEADER,
            &[
                cells(&row("a")).to_vec(),
                cells(&row("a-much-longer-name")).to_vec(),
            ],
        );
        assert_eq!(text, expected);
    }
}
