//! The append-only progress journal of a distill shard: one JSON line per finished item, so a
//! restarted shard skips what is done. A torn last line (crash mid-write) is cut off on open.

use super::check::Decision;
use crate::generate::FinishReason;
use crate::stages::{Result, StageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the (selected) input set.
    pub index: usize,
    pub id: String,
    pub rewrite: String,
    #[serde(flatten)]
    pub decision: Decision,
    pub generated_tokens: usize,
    pub finish: FinishReason,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    pub done: BTreeMap<usize, Entry>,
    /// Bytes dropped from a torn last line when opening.
    pub repaired_bytes: u64,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |e| StageError::io(path, e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut done = BTreeMap::new();
        let mut good_len = 0u64;
        let total = file.metadata().map_err(io)?.len();
        {
            let mut reader = std::io::BufReader::new(&mut file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                match serde_json::from_str::<Entry>(line.trim_end()) {
                    Ok(e) => {
                        done.insert(e.index, e);
                        good_len += n as u64;
                    }
                    Err(_) => break,
                }
            }
        }
        let repaired_bytes = total - good_len;
        if repaired_bytes > 0 {
            tracing::warn!(path = %path.display(), bytes = repaired_bytes, "repairing a torn journal tail");
            file.set_len(good_len).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            done,
            repaired_bytes,
        })
    }

    pub fn append(&mut self, entry: Entry) -> Result<()> {
        let mut line =
            serde_json::to_string(&entry).map_err(|e| StageError::Input(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| StageError::io(&self.path, e))?;
        self.file
            .flush()
            .map_err(|e| StageError::io(&self.path, e))?;
        self.done.insert(entry.index, entry);
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StageError::io(&self.path, e))
    }
}
