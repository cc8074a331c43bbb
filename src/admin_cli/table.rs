//! Aligned text tables for people at a terminal (`--output table`).

/// Columns padded to their widest cell, two spaces apart, like `kafka-consumer-groups`.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                out.push_str(cell);
                if i + 1 < columns {
                    out.push_str(&" ".repeat(width - cell.chars().count() + 2));
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.headers);
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out
    }
}

/// An optional value as a cell ("-" when absent).
pub(crate) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["TOPIC", "PARTITION", "LAG"]);
        t.row(vec!["demo".into(), "0".into(), "12".into()]);
        t.row(vec!["a-longer-topic".into(), "10".into(), "0".into()]);
        assert_eq!(
            t.render(),
            "TOPIC           PARTITION  LAG\n\
             demo            0          12\n\
             a-longer-topic  10         0"
        );
        assert_eq!(opt::<i64>(None), "-");
    }
}
