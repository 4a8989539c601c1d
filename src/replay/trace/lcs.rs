//! libCacheSim's `lcs` binary traces (`*.lcs`, `*.lcs.zst`): an 8 KiB
//! header, then little-endian records whose layout the header's version
//! gives. The layout was learned from libCacheSim's `lcs.h`; this is an
//! independent implementation.
//!
//! Header: `u64 start_magic` (0x123456789abcdef0), `u64 version`, the trace
//! statistics, and `u64 end_magic` (the same number) in its last 8 bytes.
//! Records (packed):
//!
//! | version | bytes | fields |
//! |---|---|---|
//! | 1 | 24 | `u32 time, u64 obj_id, u32 obj_size, i64 next_access_vtime` (oracleGeneral's) |
//! | 2 | 28 | `u32 time, u64 obj_id, u32 obj_size, u32 op:8 tenant:24, i64 next_access_vtime` |
//! | 3 | 36 | `u32 time, u64 obj_id, i64 obj_size, u32 op:8 tenant:24, u32 ttl, i64 next_access_vtime` |
//! | 4–8 | 40, 44, 52, 68, 100 | version 3's, then 1, 2, 4, 8 or 16 `u32` features |
//!
//! `op` is libCacheSim's request operation: `nop` (0), `get` (1), `gets`
//! (2) and `read` (12) read, the others (set, add, cas, replace, append,
//! prepend, delete, incr, decr, write, update) write. A TTL of 0 means none.

use std::io::{self, BufRead};

use super::{Request, bad, numeric, read_record};

/// Bytes of the header.
pub(super) const HEADER: usize = 8192;

/// The start and end magic number.
pub(super) const MAGIC: u64 = 0x1234_5678_9abc_def0;

/// Whether `head` starts with the lcs magic number.
pub(super) fn has_magic(head: &[u8]) -> bool {
    head.len() >= 8 && u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) == MAGIC
}

/// Bytes of a record of `version`.
fn record_size(version: u64) -> Option<usize> {
    Some(match version {
        1 => 24,
        2 => 28,
        3 => 36,
        4 => 40,
        5 => 44,
        6 => 52,
        7 => 68,
        8 => 100,
        _ => return None,
    })
}

/// Whether libCacheSim's operation `op` reads.
fn reads(op: u8) -> bool {
    matches!(op, 0 | 1 | 2 | 12)
}

pub(super) struct Lcs {
    input: Box<dyn BufRead + Send>,
    /// Version and record size, once the header is read.
    layout: Option<(u64, usize)>,
    n: u64,
    /// After an error, nothing more is read.
    failed: bool,
}

impl Lcs {
    pub(super) fn new(input: Box<dyn BufRead + Send>) -> Lcs {
        Lcs {
            input,
            layout: None,
            n: 0,
            failed: false,
        }
    }

    fn header(&mut self) -> io::Result<(u64, usize)> {
        let mut head = vec![0u8; HEADER];
        match read_record(&mut self.input, &mut head) {
            Ok(true) => {}
            Ok(false) => return Err(bad("lcs header: empty file".into())),
            Err(e) => return Err(bad(format!("lcs header: {e}"))),
        }
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or_default());
        if word(0) != MAGIC {
            return Err(bad(format!(
                "lcs header: start magic is {:#x}, not {MAGIC:#x}",
                word(0)
            )));
        }
        if word(HEADER - 8) != MAGIC {
            return Err(bad(format!(
                "lcs header: end magic is {:#x}, not {MAGIC:#x}",
                word(HEADER - 8)
            )));
        }
        let version = word(8);
        let size = record_size(version).ok_or_else(|| {
            bad(format!(
                "lcs header: unknown version {version} (1 to 8 known)"
            ))
        })?;
        Ok((version, size))
    }

    fn decode(version: u64, rec: &[u8]) -> Request {
        let u32_at = |i: usize| u32::from_le_bytes(rec[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(rec[i..i + 8].try_into().unwrap_or_default());
        let id = u64_at(4);
        let (size, op, ttl) = match version {
            1 => (u64::from(u32_at(12)), 0, 0),
            2 => (u64::from(u32_at(12)), rec[16], 0),
            // The size is an i64 from version 3 on; a negative one counts 1.
            _ => (
                u64::try_from(u64_at(12) as i64).unwrap_or(0),
                rec[20],
                u32_at(24),
            ),
        };
        Request {
            at: f64::from(u32_at(0)),
            id,
            key: numeric(id),
            size: u32::try_from(size).unwrap_or(u32::MAX).max(1),
            ttl: (ttl > 0).then_some(f64::from(ttl)),
            write: !reads(op),
        }
    }
}

impl Iterator for Lcs {
    type Item = io::Result<Request>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (version, size) = match self.layout {
            Some(l) => l,
            None => match self.header() {
                Ok(l) => *self.layout.insert(l),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            },
        };
        let mut rec = [0u8; 100];
        let rec = &mut rec[..size];
        match read_record(&mut self.input, rec) {
            Ok(false) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(bad(format!("lcs record {}: {e}", self.n))))
            }
            Ok(true) => {
                self.n += 1;
                Some(Ok(Lcs::decode(version, rec)))
            }
        }
    }
}
