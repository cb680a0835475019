//! Helpers the unit tests share.

use std::path::Path;

/// The one environment variable that rewrites golden files.
pub(crate) const BLESS: &str = "KPROXY_BLESS";

/// Compare `got` with the golden file at `path` (relative to the crate's
/// root). With `KPROXY_BLESS=1` the file is written instead, to be reviewed
/// in the diff before it is committed. Returns the mismatch, readable, so a
/// table of cases can report every failure at once.
pub(crate) fn golden(path: &str, got: &str) -> Result<(), String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os(BLESS).is_some() {
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&full, got).unwrap();
        return Ok(());
    }
    let want = std::fs::read_to_string(&full)
        .map_err(|e| format!("{path}: {e} (run with {BLESS}=1 to create it)"))?;
    if want == got {
        return Ok(());
    }
    Err(format!(
        "{path} differs:\n{}",
        pretty_assertions::StrComparison::new(&want, got)
    ))
}
