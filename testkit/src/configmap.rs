//! A Kubernetes ConfigMap volume, written the way the kubelet writes one.
//!
//! Each update is a new hidden timestamped directory; `..data` is swapped onto it by
//! renaming a fresh `..data_tmp` link over it (the one atomic step a watcher sees); every
//! key is a link through `..data`. A key's path may have directories in it (`items[].path`),
//! so a key can be a `.proto` tree; the link is its first component.

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// One mounted volume.
pub struct Volume {
    dir: PathBuf,
    updates: u32,
}

impl Volume {
    /// A volume mounted at `dir` (which must exist), empty until the first [`Volume::publish`].
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), updates: 0 }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes `files` (path in the volume, content) as the volume's whole content.
    /// `clean` removes the previous timestamped directory, as the kubelet does right after
    /// the swap. Everything is written before the swap, so a reader sees either the old
    /// content or the new, never a mix.
    pub fn publish(&mut self, files: &[(&str, &str)], clean: bool) -> io::Result<()> {
        self.updates += 1;
        let stamp = format!("..2026_12_03_08_00_{:02}.{}", self.updates % 60, 1000 + self.updates);
        for (path, content) in files {
            let file = self.dir.join(&stamp).join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content)?;
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&stamp, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        for (path, _) in files {
            let key = Path::new(path).components().next().map(|c| c.as_os_str().to_owned()).unwrap_or_default();
            let link = self.dir.join(&key);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(&key), &link)?;
            }
        }
        if clean {
            for entry in std::fs::read_dir(&self.dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with("..20") && name != stamp {
                    std::fs::remove_dir_all(self.dir.join(name))?;
                }
            }
        }
        Ok(())
    }
}
