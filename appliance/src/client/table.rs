//! Plain-text output of the client's list and show commands: tables whose column widths come
//! from their content, and aligned `key: value` lines. No colors; control characters in the
//! API's strings (which boards partly supply) are blanked so that they cannot break the layout
//! or drive the terminal.

use serde_json::Value;

/// A table: a header row and rows of cells, rendered with columns two spaces apart.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are `-`, extra cells are dropped, control characters blanked.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
        cells.resize(self.headers.len(), "-".to_string());
        self.rows.push(cells);
    }

    /// The number of rows, the header not counted.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and the rows, one line each (each ending with `\n`), without trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Aligned `key: value` lines, one per pair, each ending with `\n`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let pad = key_width - width(&key);
        let line = format!("{key}{} {}", " ".repeat(pad), clean(value));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as a cell: `-` for null, missing or empty, strings as they are (times are
/// already RFC 3339), `yes`/`no` for booleans, lists joined with `, `, objects as JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => clean(s),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other @ Value::Object(_)) => clean(&other.to_string()),
    }
}

/// The cell of `object[key]` (see [`cell`]).
pub fn get(object: &Value, key: &str) -> String {
    cell(object.get(key))
}

/// `s` with every control character (newlines, tabs, escapes) replaced by a space.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Display width of a cell: its characters (no wide-character tables here).
fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_table_widths_come_from_content() {
        let mut t = Table::new(&["ID", "STATE", "NAME"]);
        assert!(t.is_empty());
        t.row(vec!["7".into(), "finished".into(), "smoke".into()]);
        t.row(vec!["12".into(), "queued".into(), "-".into()]);
        t.row(vec!["3".into()]);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.render(),
            "ID  STATE     NAME\n\
             7   finished  smoke\n\
             12  queued    -\n\
             3   -         -\n"
        );
    }

    #[test]
    fn client_table_header_only_and_wide_content() {
        assert_eq!(Table::new(&["ID", "BOARD"]).render(), "ID  BOARD\n");
        let mut t = Table::new(&["A", "B"]);
        t.row(vec![
            "héllo\tw\x1b[31m".into(),
            "x\ny".into(),
            "dropped".into(),
        ]);
        assert_eq!(t.render(), "A             B\nhéllo w [31m  x y\n");
    }

    #[test]
    fn client_cells_from_json() {
        let v = json!({"s": "2026-12-04T13:00:00Z", "n": null, "e": "", "b": true, "f": false,
                       "i": 7, "a": ["x", "y"], "ea": [], "o": {"k": 1}});
        assert_eq!(get(&v, "s"), "2026-12-04T13:00:00Z");
        assert_eq!(get(&v, "n"), "-");
        assert_eq!(get(&v, "missing"), "-");
        assert_eq!(get(&v, "e"), "-");
        assert_eq!(get(&v, "b"), "yes");
        assert_eq!(get(&v, "f"), "no");
        assert_eq!(get(&v, "i"), "7");
        assert_eq!(get(&v, "a"), "x, y");
        assert_eq!(get(&v, "ea"), "-");
        assert_eq!(get(&v, "o"), r#"{"k":1}"#);
    }

    #[test]
    fn client_fields_are_aligned() {
        let text = fields(&[
            ("id", "qemu-01".into()),
            ("device type", "labboot-qemu-arm64".into()),
            ("error", "two\nlines".into()),
            ("empty", String::new()),
        ]);
        assert_eq!(
            text,
            "id:          qemu-01\n\
             device type: labboot-qemu-arm64\n\
             error:       two lines\n\
             empty:\n"
        );
        assert_eq!(fields(&[]), "");
    }
}
