//! The write-ahead log: append-only segment files of framed entries
//! (`len u32 | crc32 u32 | payload`, little endian).
//!
//! Why not a fjall keyspace (DESIGN.md's first plan): measured on this
//! machine, a batch logged in fjall is written three times (journal,
//! memtable flush, compaction) and its tombstones and journals kept the data
//! dir at ~44 bytes per field value long after the data was flushed into
//! blocks. Segment files are written once and deleted whole once the blocks
//! that cover them are durable.
//!
//! Appends are serialised by the engine; fsyncs are shared (group commit) by
//! syncing the current segment, and a segment is synced before it is closed.
//! A torn tail (a crash mid-append) fails its checksum and ends the replay of
//! that segment: such an entry was never acknowledged.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StorageError;

fn io_error(context: &str, error: std::io::Error) -> StorageError {
    StorageError::Engine(format!("wal {context}: {error}"))
}

pub struct Wal {
    dir: PathBuf,
    current: Arc<File>,
    current_id: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.wal"))
}

/// The ids of the segments in `dir`, ascending.
pub fn segment_ids(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(error) => return Err(io_error("list", error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", e))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Every intact entry of every segment, in order, with the segment id.
pub fn replay(
    dir: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    for id in segment_ids(dir)? {
        let path = segment_path(dir, id);
        let file = File::open(&path).map_err(|e| io_error("open", e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; 8];
        let mut payload = Vec::new();
        loop {
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(io_error("read", error)),
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            payload.resize(len, 0);
            match reader.read_exact(&mut payload) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::warn!(segment = %path.display(), "torn entry at the end of a WAL segment (never acknowledged)");
                    break;
                }
                Err(error) => return Err(io_error("read", error)),
            }
            if crc32fast::hash(&payload) != crc {
                tracing::warn!(segment = %path.display(), "checksum mismatch at the end of a WAL segment (never acknowledged)");
                break;
            }
            each(id, &payload)?;
        }
    }
    Ok(())
}

impl Wal {
    /// Open for appending: always a new segment after the existing ones,
    /// which stay until a flush covers them.
    pub fn open(dir: &Path) -> Result<Wal, StorageError> {
        fs::create_dir_all(dir).map_err(|e| io_error("create dir", e))?;
        let next = segment_ids(dir)?.last().map(|id| id + 1).unwrap_or(1);
        let current = Self::create(dir, next)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            current: Arc::new(current),
            current_id: next,
        })
    }

    fn create(dir: &Path, id: u64) -> Result<File, StorageError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, id))
            .map_err(|e| io_error("create segment", e))?;
        // Make the new file's directory entry durable.
        if let Ok(handle) = File::open(dir) {
            let _ = handle.sync_all();
        }
        Ok(file)
    }

    pub fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| StorageError::Engine("wal entry too large".into()))?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        (&*self.current)
            .write_all(&frame)
            .map_err(|e| io_error("append", e))
    }

    /// The file to fsync for everything appended so far.
    pub fn current(&self) -> Arc<File> {
        self.current.clone()
    }

    /// Close the current segment (synced) and start a new one; returns the
    /// id of the last closed segment: every segment up to it may be deleted
    /// once what it holds is in durable blocks.
    pub fn rotate(&mut self) -> Result<u64, StorageError> {
        self.current.sync_data().map_err(|e| io_error("sync", e))?;
        let closed = self.current_id;
        let next = closed + 1;
        self.current = Arc::new(Self::create(&self.dir, next)?);
        self.current_id = next;
        Ok(closed)
    }

    /// Delete every segment with an id up to `last`.
    pub fn delete_through(&self, last: u64) -> Result<(), StorageError> {
        for id in segment_ids(&self.dir)? {
            if id <= last && id != self.current_id {
                fs::remove_file(segment_path(&self.dir, id))
                    .map_err(|e| io_error("delete segment", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_replay_rotate_and_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path()).expect("open");
        wal.append(b"one").expect("append");
        let closed = wal.rotate().expect("rotate");
        wal.append(b"two").expect("append");
        wal.current().sync_data().expect("sync");
        // a torn frame: a header that promises more than is there
        let path = segment_path(dir.path(), closed + 1);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open segment");
        file.write_all(&100u32.to_le_bytes()).expect("write");
        file.write_all(&[0, 0, 0, 0, 1, 2]).expect("write");
        let mut seen = Vec::new();
        replay(dir.path(), |_, payload| {
            seen.push(payload.to_vec());
            Ok(())
        })
        .expect("replay");
        assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
        wal.delete_through(closed).expect("delete");
        assert_eq!(segment_ids(dir.path()).expect("ids"), vec![closed + 1]);
    }
}
