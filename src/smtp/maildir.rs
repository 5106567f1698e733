//! Maildir delivery: write to `tmp/`, sync, then rename into `new/` under a unique name.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unique message names and queue ids: `<seconds>.M<microseconds>P<pid>Q<counter>.<host>`,
/// the form the Maildir specification recommends.
#[derive(Debug)]
pub struct UniqueNames {
    host: String,
    counter: AtomicU64,
}

impl UniqueNames {
    pub fn new(hostname: &str) -> Self {
        // `/` and `:` cannot appear in a Maildir name; the specification encodes them in octal.
        let host = hostname.replace('/', "\\057").replace(':', "\\072");
        Self {
            host,
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let count = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!(
            "{}.M{}P{}Q{count}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.host
        )
    }
}

/// A Maildir directory with its `tmp`, `new` and `cur` subdirectories.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens `root`, creating it and its subdirectories if needed.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `message` as `new/<name>` and returns its path. Blocking: call it off the runtime.
    pub fn store(&self, name: &str, message: &[u8]) -> io::Result<PathBuf> {
        let tmp = self.root.join("tmp").join(name);
        let new = self.root.join("new").join(name);
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            file.write_all(message)?;
            file.sync_all()?;
            fs::rename(&tmp, &new)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_safe() {
        let names = UniqueNames::new("mx/a:b");
        let first = names.next();
        let second = names.next();
        assert_ne!(first, second);
        assert!(first.ends_with(".mx\\057a\\072b"), "{first}");
        assert!(!first.contains('/') && !first.contains(':'));
    }

    #[test]
    fn store_moves_the_message_into_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = Maildir::create(dir.path().join("mail")).expect("create maildir");
        let names = UniqueNames::new("mx");
        let path = maildir.store(&names.next(), b"hello\r\n").expect("store");
        assert_eq!(path.parent(), Some(maildir.root().join("new").as_path()));
        assert_eq!(fs::read(&path).expect("read"), b"hello\r\n");
        assert_eq!(
            fs::read_dir(maildir.root().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
        assert!(maildir.root().join("cur").is_dir());
    }
}
