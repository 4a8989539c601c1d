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
//! An early layout, which libCacheSim once wrote, has a 1 KiB header instead:
//! `u64 start_magic`, a Python `struct` format string of the record
//! (`char[240]`, little-endian), the 1-based field numbers of obj_id,
//! obj_size, time, …, op and ttl (`u8` each), the statistics, and `u32
//! n_fields, u32 item_size, u64 version, u64 end_magic` as its last bytes;
//! it is told from the other by the end magic number at 1016.
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

/// Bytes of the header of the early layout.
pub(super) const EARLY_HEADER: usize = 1024;

/// The record layout a header gives.
#[derive(Debug, Clone)]
enum Layout {
    /// A numbered version (8 KiB header).
    Version(u64),
    /// The early layout (1 KiB header): a `struct` format string and which
    /// of its fields (1-based, 0 = none) hold the id, size, time, op, TTL.
    Described {
        /// Offset and type character of each field.
        fields: Vec<(usize, u8)>,
        id: usize,
        size: usize,
        time: usize,
        op: usize,
        ttl: usize,
    },
}

/// Bytes of a field of type `c` (Python `struct` characters).
fn field_size(c: u8) -> Option<usize> {
    Some(match c {
        b'c' | b'b' | b'B' | b'?' => 1,
        b'h' | b'H' => 2,
        b'i' | b'I' | b'l' | b'L' | b'f' => 4,
        b'q' | b'Q' | b'd' => 8,
        _ => return None,
    })
}

/// The early layout's header: `u64 start_magic, char format[240]` (a Python
/// `struct` format, `<` first), `u8` field numbers of obj_id, obj_size,
/// time, last_access_vtime, next_access_vtime, op, ttl (1-based), …,
/// `u32 n_fields, u32 item_size, u64 version, u64 end_magic` in its last 24 bytes.
fn early_layout(head: &[u8]) -> io::Result<(Layout, usize)> {
    let err = |what: String| bad(format!("lcs header (1 KiB layout): {what}"));
    let format = &head[8..248];
    let format = &format[..format.iter().position(|&b| b == 0).unwrap_or(format.len())];
    let Some((&endian, types)) = format.split_first() else {
        return Err(err("empty format string".into()));
    };
    if endian != b'<' && endian != b'=' && endian != b'@' {
        return Err(err(format!(
            "format {:?} is not little-endian",
            String::from_utf8_lossy(format)
        )));
    }
    let mut fields = Vec::with_capacity(types.len());
    let mut offset = 0;
    for &c in types {
        let size = field_size(c)
            .ok_or_else(|| err(format!("unknown field type {:?} in format", char::from(c))))?;
        fields.push((offset, c));
        offset += size;
    }
    let item_size = u32::from_le_bytes(head[1004..1008].try_into().unwrap_or_default()) as usize;
    if item_size != offset {
        return Err(err(format!(
            "records of {item_size} bytes, but the format adds up to {offset}"
        )));
    }
    let field = |i: usize| usize::from(head[i]);
    let id = field(248);
    if id == 0 || id > fields.len() {
        return Err(err(format!("obj_id field {id} of {}", fields.len())));
    }
    let layout = Layout::Described {
        fields,
        id,
        size: field(249),
        time: field(250),
        op: field(253),
        ttl: field(254),
    };
    Ok((layout, item_size))
}

/// Field `i` (1-based; 0 or past the end = absent, 0) of `rec`, as an i128
/// (floats truncated).
fn value(fields: &[(usize, u8)], rec: &[u8], i: usize) -> i128 {
    let Some(&(at, c)) = i.checked_sub(1).and_then(|i| fields.get(i)) else {
        return 0;
    };
    let b = |n: usize| &rec[at..at + n];
    match c {
        b'c' | b'B' | b'?' => i128::from(rec[at]),
        b'b' => i128::from(rec[at] as i8),
        b'h' => i128::from(i16::from_le_bytes(b(2).try_into().unwrap_or_default())),
        b'H' => i128::from(u16::from_le_bytes(b(2).try_into().unwrap_or_default())),
        b'i' | b'l' => i128::from(i32::from_le_bytes(b(4).try_into().unwrap_or_default())),
        b'I' | b'L' => i128::from(u32::from_le_bytes(b(4).try_into().unwrap_or_default())),
        b'q' => i128::from(i64::from_le_bytes(b(8).try_into().unwrap_or_default())),
        b'Q' => i128::from(u64::from_le_bytes(b(8).try_into().unwrap_or_default())),
        b'f' => f32::from_le_bytes(b(4).try_into().unwrap_or_default()) as i128,
        _ => f64::from_le_bytes(b(8).try_into().unwrap_or_default()) as i128,
    }
}

pub(super) struct Lcs {
    input: Box<dyn BufRead + Send>,
    /// The record layout and size, once the header is read.
    layout: Option<(Layout, usize)>,
    /// The record being read.
    rec: Vec<u8>,
    n: u64,
    /// After an error, nothing more is read.
    failed: bool,
}

impl Lcs {
    pub(super) fn new(input: Box<dyn BufRead + Send>) -> Lcs {
        Lcs {
            input,
            layout: None,
            rec: Vec::new(),
            n: 0,
            failed: false,
        }
    }

    /// Reads the header: the early 1 KiB layout when its end magic number
    /// ends the first KiB, else the 8 KiB one.
    fn header(&mut self) -> io::Result<(Layout, usize)> {
        let mut head = vec![0u8; HEADER];
        let truncated = |e: io::Error| bad(format!("lcs header: {e}"));
        match read_record(&mut self.input, &mut head[..EARLY_HEADER]) {
            Ok(true) => {}
            Ok(false) => return Err(bad("lcs header: empty file".into())),
            Err(e) => return Err(truncated(e)),
        }
        let word =
            |h: &[u8], i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        if word(&head, 0) != MAGIC {
            return Err(bad(format!(
                "lcs header: start magic is {:#x}, not {MAGIC:#x}",
                word(&head, 0)
            )));
        }
        if word(&head, EARLY_HEADER - 8) == MAGIC {
            return early_layout(&head);
        }
        match read_record(&mut self.input, &mut head[EARLY_HEADER..]) {
            Ok(true) => {}
            Ok(false) => {
                return Err(bad(format!(
                    "lcs header: truncated record: {EARLY_HEADER} of {HEADER} bytes"
                )));
            }
            Err(e) => return Err(truncated(e)),
        }
        if word(&head, HEADER - 8) != MAGIC {
            return Err(bad(format!(
                "lcs header: end magic is {:#x}, not {MAGIC:#x}",
                word(&head, HEADER - 8)
            )));
        }
        let version = word(&head, 8);
        let size = record_size(version).ok_or_else(|| {
            bad(format!(
                "lcs header: unknown version {version} (1 to 8 known)"
            ))
        })?;
        Ok((Layout::Version(version), size))
    }

    fn decode(layout: &Layout, rec: &[u8]) -> Request {
        let u32_at = |i: usize| u32::from_le_bytes(rec[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(rec[i..i + 8].try_into().unwrap_or_default());
        let (at, id, size, op, ttl) = match layout {
            Layout::Version(1) => (u32_at(0), u64_at(4), u64::from(u32_at(12)), 0, 0),
            Layout::Version(2) => (u32_at(0), u64_at(4), u64::from(u32_at(12)), rec[16], 0),
            // The size is an i64 from version 3 on; a negative one counts 1.
            Layout::Version(_) => (
                u32_at(0),
                u64_at(4),
                u64::try_from(u64_at(12) as i64).unwrap_or(0),
                rec[20],
                u32_at(24),
            ),
            Layout::Described {
                fields,
                id,
                size,
                time,
                op,
                ttl,
            } => {
                let v = |i: usize| value(fields, rec, i);
                (
                    u32::try_from(v(*time)).unwrap_or(0),
                    v(*id) as u64,
                    u64::try_from(v(*size)).unwrap_or(0),
                    u8::try_from(v(*op)).unwrap_or(u8::MAX),
                    u32::try_from(v(*ttl)).unwrap_or(0),
                )
            }
        };
        Request {
            at: f64::from(at),
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
        if self.layout.is_none() {
            match self.header() {
                Ok(l) => self.layout = Some(l),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let (layout, size) = self.layout.as_ref()?;
        self.rec.resize(*size, 0);
        match read_record(&mut self.input, &mut self.rec) {
            Ok(false) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(bad(format!("lcs record {}: {e}", self.n))))
            }
            Ok(true) => {
                self.n += 1;
                Some(Ok(Lcs::decode(layout, &self.rec)))
            }
        }
    }
}
