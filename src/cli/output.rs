//! How the commands print: JSON for scripts, and for people aligned tables
//! (columns as wide as their widest cell, control characters escaped),
//! fixed-width tables and `Label: value` fields, plus the shared cell
//! formats. Each table keeps the exact layout its command always had
//! (integration tests and scripts compare the bytes).

use serde::Serialize;

/// Print `v` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `-` for an empty value.
pub fn dash(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.to_string()
    }
}

/// Print aligned columns under a header; control characters in cells (a
/// newline or an escape in a workspace path) are shown escaped.
pub fn print_rows<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    print!("{}", aligned(head, rows));
}

/// [`print_rows`]' text: each column as wide as its widest cell (in
/// characters), two spaces apart, trailing spaces trimmed, a newline after
/// every line.
pub fn aligned<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.clone().map(|c| crate::config::printable(&c)))
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// One column of a [`Fixed`] table.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    /// What comes before the column (nothing for the first).
    gap: &'static str,
    /// The width cells are padded to (a longer cell is not cut).
    width: usize,
    /// Padded on the left (numbers) instead of the right.
    right: bool,
}

impl Col {
    /// A column padded to `width`, its text on the left, one space before it.
    pub const fn left(width: usize) -> Col {
        Col {
            gap: " ",
            width,
            right: false,
        }
    }

    /// A column padded to `width`, its text on the right, one space before it.
    pub const fn right(width: usize) -> Col {
        Col {
            gap: " ",
            width,
            right: true,
        }
    }

    /// The last column: its cells as they are, one space before it.
    pub const fn rest() -> Col {
        Col::left(0)
    }

    /// The same column with `gap` before it instead of one space.
    pub const fn after(self, gap: &'static str) -> Col {
        Col { gap, ..self }
    }
}

/// A table of fixed-width columns (`cci container list`, `cci image list`,
/// `cci network status`): control characters in cells are shown escaped (an
/// image description is anyone's text); lines are not trimmed.
#[derive(Debug, Clone, Copy)]
pub struct Fixed<const N: usize>(pub [Col; N]);

impl<const N: usize> Fixed<N> {
    /// One line of the table (without its newline).
    pub fn line(&self, cells: [&str; N]) -> String {
        let mut out = String::new();
        for (i, (col, cell)) in self.0.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push_str(col.gap);
            }
            let cell = crate::config::printable(cell);
            let w = col.width;
            if col.right {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out
    }
}

/// `Label: value` lines with the values lined up (`cci info`); control
/// characters in values are shown escaped.
pub fn fields(rows: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in rows {
        let v = crate::config::printable(v);
        out.push_str(&format!("{:<16} {v}\n", format!("{k}:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_columns_are_as_wide_as_their_widest_cell_and_escaped() {
        let rows = [
            ["a".to_string(), "x\ny".to_string(), String::new()],
            ["long name".to_string(), "-".to_string(), "é".to_string()],
        ];
        assert_eq!(
            aligned(&["NAME", "WS", "Z"], &rows),
            "NAME       WS    Z\na          x\\ny\nlong name  -     é\n"
        );
    }

    #[test]
    fn fixed_tables_escape_what_an_image_description_may_hold() {
        let t = Fixed([Col::left(4), Col::rest().after("  ")]);
        assert_eq!(
            t.line(["a", "x\x1b]0;owned\x07y"]),
            "a     x\\u{1b}]0;owned\\u{7}y"
        );
    }

    #[test]
    fn fixed_tables_keep_the_layouts_the_commands_had() {
        // `cci container list`, as it was written out.
        let t = Fixed([Col::left(32), Col::left(8), Col::left(10), Col::rest()]);
        for (n, s, e, ip) in [
            ("NAME", "STATE", "EPHEMERAL", "IPV4"),
            ("c1", "Running", "yes", "10.0.0.2"),
            (
                "a-name-longer-than-thirty-two-characters",
                "Stopped",
                "no",
                "-",
            ),
        ] {
            assert_eq!(
                t.line([n, s, e, ip]),
                format!("{:<32} {:<8} {:<10} {}", n, s, e, ip)
            );
        }
        // `cci image list`: the size right-aligned, two spaces before the
        // date and the description (kept when the description is empty).
        let t = Fixed([
            Col::left(28),
            Col::left(12),
            Col::right(8),
            Col::left(19).after("  "),
            Col::rest().after("  "),
        ]);
        assert_eq!(
            t.line(["ALIASES", "FINGERPRINT", "SIZE", "CREATED", "DESCRIPTION"]),
            format!(
                "{:<28} {:<12} {:>8}  {:<19}  DESCRIPTION",
                "ALIASES", "FINGERPRINT", "SIZE", "CREATED"
            )
        );
        for size in [0u64, 12, 123_456, 12_345_678] {
            assert_eq!(
                t.line(["cci", "0123456789ab", &format!("{size}MB"), "2026", ""]),
                format!(
                    "{:<28} {:<12} {:>6}MB  {:<19}  {}",
                    "cci", "0123456789ab", size, "2026", ""
                )
            );
        }
    }

    #[test]
    fn fields_line_up_after_the_label() {
        assert_eq!(
            fields(&[("Name", "c1".into()), ("Session running", "a\tb".into())]),
            "Name:            c1\nSession running: a\\tb\n"
        );
    }
}
