//! The rendered text pages `cargo xtask setup` writes to `var/testdata/pages`: one page of
//! text rotated by 0, 90, 180 and 270 degrees, as JPEG and PNG. The orientation model
//! classifies them, which makes a model's answer checkable.

/// The page rotated by `degrees`, as `ext` (`jpg` or `png`).
pub fn page(degrees: u32, ext: &str) -> Vec<u8> {
    let path = crate::paths::var().join(format!("testdata/pages/page-{degrees}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("test page {} missing ({e}): run `cargo xtask setup`", path.display()))
}
