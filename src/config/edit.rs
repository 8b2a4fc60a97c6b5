//! Changing the user's own configuration file in place (`cci network allow
//! --save`): the one value added, comments and layout kept, written
//! atomically.

use std::path::Path;

/// Add `value` to the list `[section] key` of the TOML file `file` (made,
/// with its folder, when missing), unless it is there.
pub fn add_to_list(file: &Path, section: &str, key: &str, value: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML; not changed", file.display()))?;
    let table = doc
        .entry(section)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .with_context(|| format!("{}: {section} is not a table; not changed", file.display()))?;
    let list = table
        .entry(key)
        .or_insert(toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .with_context(|| {
            format!(
                "{}: {section}.{key} is not a list; not changed",
                file.display()
            )
        })?;
    if list.iter().any(|v| v.as_str() == Some(value)) {
        return Ok(());
    }
    list.push(value);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::state::write_atomic(file, doc.to_string().as_bytes())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_once_and_keeps_comments() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cci/config.toml");
        add_to_list(&f, "network", "allowed_domains", "a.example").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("allowed_domains = [\"a.example\"]"), "{text}");
        std::fs::write(
            &f,
            "# mine\n[network]\nmode = \"proxy\"  # by name\nallowed_domains = [\"a.example\"]\n",
        )
        .unwrap();
        add_to_list(&f, "network", "allowed_domains", "*.b.example").unwrap();
        add_to_list(&f, "network", "allowed_domains", "*.b.example").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("# mine\n"), "{text}");
        assert!(text.contains("# by name"), "{text}");
        assert_eq!(text.matches("*.b.example").count(), 1, "{text}");
        std::fs::write(&f, "[network\n").unwrap();
        assert!(add_to_list(&f, "network", "allowed_domains", "x.example").is_err());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "[network\n");
    }
}
