//! Plain-text tables for the operator commands: a header line and aligned columns, the last
//! column unpadded (it is often a long message).

/// Rows of cells under a header.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, columns two spaces apart.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Cuts `text` to `max` characters, marking the cut with `…`, for a table cell.
pub fn cell(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_the_last_is_not_padded() {
        let mut table = Table::new(["ID", "REASON", "DETAIL"]);
        table.row(vec!["7".into(), "exhausted".into(), "gave up".into()]);
        table.row(vec!["12".into(), "malformed".into(), "not JSON".into()]);
        assert_eq!(
            table.render(),
            "ID  REASON     DETAIL\n7   exhausted  gave up\n12  malformed  not JSON\n"
        );
    }

    #[test]
    fn long_cells_are_cut_with_a_mark() {
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("abc", 4), "abc");
    }
}
