//! Terminal tables shared by the commands that print reports.

/// Column widths grown row by row, so a table can be measured while its rows stream past and
/// printed afterwards without holding them.
#[derive(Debug, Clone)]
pub struct Columns {
    widths: Vec<usize>,
}

impl Columns {
    pub fn new(header: &[&str]) -> Self {
        Columns {
            widths: header.iter().map(|h| h.chars().count()).collect(),
        }
    }

    /// Widens the columns to fit `cells`.
    pub fn fit<S: AsRef<str>>(&mut self, cells: &[S]) {
        for (width, cell) in self.widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.as_ref().chars().count());
        }
    }

    /// One line: left-aligned cells separated by two spaces, no trailing spaces, `\n` last.
    pub fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(&self.widths) {
            line.push_str(&format!("{:<width$}  ", cell.as_ref()));
        }
        let mut line = line.trim_end().to_string();
        line.push('\n');
        line
    }
}

/// Left-aligned columns separated by two spaces, header first, no trailing spaces.
pub fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut columns = Columns::new(header);
    for row in rows {
        columns.fit(row);
    }
    let mut out = columns.line(header);
    for row in rows {
        out.push_str(&columns.line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let rows = vec![vec!["smtp", "25"], vec!["submission", "587"]];
        assert_eq!(
            super::table(&["NAME", "PORT"], &rows),
            "NAME        PORT\nsmtp        25\nsubmission  587\n"
        );
    }
}
