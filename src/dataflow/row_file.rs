//! A worker's row file: an append-only file of Arrow IPC segments, each a complete stream of one
//! batch, read back by segment. Invariants: segments are only appended; a segment's bytes lie
//! between its start offset and the next one's (or the file's length); a file reopened at a
//! recorded length is cut back to it, so what was appended after a snapshot is forgotten.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

/// An append-only file of Arrow IPC segments (each a complete stream of one batch).
pub struct RowFile {
    pub path: PathBuf,
    file: File,
    /// Start offset of every segment; the file's length ends the last one.
    pub offsets: Vec<u64>,
    pub len: u64,
    /// Rows written, live or superseded.
    pub rows: u64,
}

impl RowFile {
    /// Creates (truncating) the row file at `path`.
    pub fn create(path: PathBuf) -> Result<RowFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(RowFile { path, file, offsets: Vec::new(), len: 0, rows: 0 })
    }

    /// Appends `rows` as a new segment; returns its index.
    pub fn append(&mut self, rows: &RecordBatch) -> Result<u32> {
        let io = |e: std::io::Error| Error::io(&self.path, e);
        (&self.file).seek(SeekFrom::Start(self.len)).map_err(io)?;
        let mut out = BufWriter::new(&self.file);
        {
            let mut w = StreamWriter::try_new(&mut out, &rows.schema())?;
            w.write(rows)?;
            w.finish()?;
        }
        out.flush().map_err(io)?;
        drop(out);
        let end = (&self.file).stream_position().map_err(io)?;
        self.offsets.push(self.len);
        self.len = end;
        self.rows += rows.num_rows() as u64;
        Ok((self.offsets.len() - 1) as u32)
    }

    /// Reopens the row file at `path` as recorded: `len` bytes in segments starting at
    /// `offsets`, holding `rows` rows (the file is cut back to `len`).
    pub fn reopen(path: PathBuf, offsets: Vec<u64>, len: u64, rows: u64) -> Result<RowFile> {
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let actual = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if actual < len {
            return Err(Error::file(&path, format!("row file is {actual} bytes, its snapshot recorded {len}")));
        }
        file.set_len(len).map_err(|e| Error::io(&path, e))?;
        Ok(RowFile { path, file, offsets, len, rows })
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Reads segment `segment` back.
    pub fn read(&self, segment: u32) -> Result<RecordBatch> {
        let s = segment as usize;
        let (start, end) = (self.offsets[s], self.offsets.get(s + 1).copied().unwrap_or(self.len));
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut bytes, start).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        let batch = reader.next().ok_or_else(|| Error::file(&self.path, format!("segment {s} is empty")))?;
        Ok(batch?)
    }
}
