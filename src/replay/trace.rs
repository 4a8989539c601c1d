//! Trace readers: every format is a streaming iterator of [`Request`]s, so a
//! trace larger than memory replays in constant memory.
//!
//! | format | what | time | key | size |
//! |---|---|---|---|---|
//! | `cloudphysics` | libCacheSim CSV, header `version,time,op,size,lbn` | `time`, seconds | `lbn` | `size` |
//! | `vscsi` | libCacheSim binary, 32-byte little-endian records `u32 sn, u32 len, u32 nSG, u16 cmd, u16 ver, u64 lbn, u64 ts` | `ts`, microseconds | `lbn` | `len` |
//! | `cache2k` | big-endian `i32` per request (Caffeine's cache2k traces such as `web07.trace.xz`) | from `--rate` | the integer | 1 |
//! | `oracle-general` | libCacheSim binary, 24-byte little-endian records `u32 time, u64 obj_id, u32 obj_size, i64 next_access_vtime` (`*.oracleGeneral*`) | `time`, seconds | `obj_id` | `obj_size` |
//! | `txt` | one key per line (libCacheSim's plain-text traces, Caffeine's LIRS `.trace`/`.trc` files and Gradle's); blank, `#` and LIRS's `*` checkpoint lines skipped | from `--rate` | the line | 1 |
//! | `twitter` | Twitter's cache traces (twitter/cache-trace): `timestamp,key,key_size,value_size,client_id,operation,ttl` | `timestamp`, seconds | `key` | key + value size |
//! | `csv` | `timestamp,key[,size[,ttl]]`, seconds (fractions allowed), optional header line | `timestamp` | `key` | `size` (default 1) |
//! | `access-jsonl` | the service's own access records, one JSON object per line: an `AccessEvent` (`{"key": "k", "at": 1700000000.5}`, `at` in unix seconds or RFC 3339, optional) or a whole `POST /warm/access` body (`{"keys": [...], "events": [...]}`) | `at`, else from `--rate` | `key` | 1 |
//! | `lcs` | libCacheSim's binary `lcs` (`*.lcs`): an 8 KiB header (magic `0x123456789abcdef0`, version 1–8), then little-endian records `u32 time, u64 obj_id, obj_size[, op, tenant, ttl], next_access_vtime`, or the early layout's 1 KiB header with a `struct` format string (`trace/lcs.rs` has every version) | `time`, seconds | `obj_id` | `obj_size` |
//! | `address` | memory address traces (UCSD CSE 240A; Caffeine's `address/*.trace.gz`): `l\|s 0xADDRESS INSTRUCTIONS [HIT MISS]` | from `--rate` | the address | 1 |
//! | `adapt-size` | AdaptSize / webcachesim request logs (Caffeine's `adapt_size/request.trace.xz`): `TIME ID SIZE` | `TIME`, seconds | `ID` | `SIZE` |
//! | `arc` | ARC's block traces (`*.lis`): `START COUNT IGNORED REQUEST`, one request per block `START..START+COUNT` | from `--rate` | the block | 512 |
//! | `lirs2` | LIRS2's CloudPhysics traces (Caffeine's `cloud_physics/w106.trace.xz`): a big-endian `u32` per request | from `--rate` | the integer | 1 |
//! | `corda` | Corda's vault service traces (Caffeine's `corda/trace_vaultservice.gz`): a big-endian `i64` per request | from `--rate` | the integer | 1 |
//! | `scarab` | Scarab Research's traces (Caffeine's `scarab/*.xz`): a big-endian `i64` per request | from `--rate` | the integer | 1 |
//! | `msr` | MSR Cambridge block traces (SNIA; Caffeine's `snia_cambridge/*.csv`): `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime` | `Timestamp`, Windows FILETIME (100 ns ticks since 1601) as Unix seconds | `Offset` | `Size` |
//! | `systor` | SYSTOR '17 block traces (SNIA; Caffeine's `snia_systor/*.csv.gz`): `Timestamp,Response,IOType,LUN,Offset,Size`, header lines skipped | `Timestamp`, Unix seconds | `LUN:Offset` | `Size` |
//! | `tencent-block` | Tencent Cloud Block Storage traces (SNIA; Caffeine's `snia_tencent_block/*.bz2`): `Timestamp,Offset,Size,IOType,VolumeID`, offset and size in 512-byte sectors | `Timestamp`, Unix seconds | `VolumeID:Offset` | `Size` x 512 |
//! | `tencent-photo` | Tencent photo cache traces (SNIA; Caffeine's `snia_tencent_photo/*.bz2`): `Timestamp PhotoId Format SizeSpec ReturnSize CacheHit Terminal ResponseTime` | `Timestamp`, `yyyyMMddHHmmss` taken as UTC | `PhotoId` | `ReturnSize` |
//!
//! `cloudphysics` and `vscsi` carry the SCSI opcode: `0x28` READ(10) and
//! `0x2a` WRITE(10), `twitter` the memcached command (`get`/`gets` read,
//! anything else writes), `lcs` (versions 2 on) libCacheSim's operation
//! (`get`, `gets`, `read`, `nop` read), `address` the access type (`s`
//! stores), `msr` `Read`/`Write`, `systor` `R`/`W` (blank reads) and
//! `tencent-block` 0/1; [`Request::write`] is set for writes, and the
//! caller decides whether writes count as accesses (libCacheSim counts
//! them). A Twitter or lcs TTL of 0 means none (the replay's `--ttl`
//! applies).
//!
//! Each record is one request, with its size, as libCacheSim reads block
//! traces; Caffeine's simulator differs in places, which matter only to
//! compare figures with it: it expands SYSTOR's records into 512-byte
//! blocks and keeps only reads, keys SYSTOR by offset alone, keeps only
//! Tencent photo lines of JPEG and WebP, and keys AdaptSize requests by id
//! and size together. `arc`, like Caffeine, reads every block of a range.
//!
//! [`Format::detect`] lists its rules. Formats no rule can tell apart from
//! another (a `lirs2` file not named `w<digits>.trace` reads as `cache2k`;
//! `corda` and `scarab`, one layout, by their names) need `--format`.
//!
//! Keys of the binary and numeric formats are numbers ([`KeySpace::Numeric`]):
//! their id is the number itself (`address`, `arc` and `msr` included).
//! Text keys (those of `txt`, `twitter`, `csv` and `access-jsonl`, the
//! `LUN:Offset` and `VolumeID:Offset` of `systor` and `tencent-block`, the
//! hex photo ids of `tencent-photo`) get a 64-bit hash as id
//! ([`KeySpace::Text`]); two distinct keys sharing a hash would be merged
//! (odds about n²/2⁶⁵: 3·10⁻⁶ for 10 million keys).
//!
//! Compressed files stream too, whatever the format. The compression is
//! recognised by the file's magic number (gzip `1f 8b`, bzip2 `BZh`, xz
//! `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`), not its name, so a compressed
//! file without the suffix opens, and a file that has the suffix but not
//! the magic number reads as it is; format detection looks through the
//! suffix (`web07.trace.xz` is a `.trace`). gzip (`.gz`, as
//! caffeine's traces ship) is decoded by `flate2`, every member of a
//! multi-member file; bzip2 (`.bz2`) by `bzip2` (pure Rust), every stream;
//! xz (`.xz`) by `lzma-rs` on a helper thread that hands 64 KiB chunks over a
//! bounded channel; zstd (`.zst`, as libCacheSim's datasets ship) by
//! `ruzstd`, frame after frame. A corrupt or truncated file is an error
//! naming the compression (`gzip: truncated: …`).

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, BufRead, Read};
use std::path::Path;

use compact_str::{CompactString, format_compact};

use crate::protocol::{AccessEvent, AccessRequest, AccessTime};

mod caffeine;
mod compress;
mod lcs;
mod snia;

pub use compress::{Compression, open_bytes};

/// One access of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Seconds (virtual unix time).
    pub at: f64,
    /// Identity used by the simulation ([`KeySpace::id`] of `key`).
    pub id: u64,
    /// The key as the tracker and predictors see it.
    pub key: CompactString,
    /// Bytes of the value (1 when the trace has no sizes).
    pub size: u32,
    /// TTL of this value, when the trace says (csv's 4th column).
    pub ttl: Option<f64>,
    /// A write (SCSI WRITE) rather than a read.
    pub write: bool,
}

impl Request {
    /// A read of `key` at `at`, from a trace that gives neither sizes nor
    /// TTLs (one key per line, the service's access log).
    pub fn read_of(at: f64, key: &str) -> Request {
        Request {
            at,
            id: text_id(key),
            key: CompactString::from(key),
            size: 1,
            ttl: None,
            write: false,
        }
    }
}

/// The trace formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    CloudPhysics,
    Vscsi,
    Cache2k,
    OracleGeneral,
    Text,
    Twitter,
    Csv,
    AccessJsonl,
    Lcs,
    Address,
    AdaptSize,
    Arc,
    Lirs2,
    Corda,
    Scarab,
    Msr,
    Systor,
    TencentBlock,
    TencentPhoto,
}

impl Format {
    pub const NAMES: [&'static str; 19] = [
        "cloudphysics",
        "vscsi",
        "cache2k",
        "oracle-general",
        "txt",
        "twitter",
        "csv",
        "access-jsonl",
        "lcs",
        "address",
        "adapt-size",
        "arc",
        "lirs2",
        "corda",
        "scarab",
        "msr",
        "systor",
        "tencent-block",
        "tencent-photo",
    ];

    /// The format `s` names: one of [`Format::NAMES`], or another name it
    /// goes by (Caffeine's trace format names among them: `lirs`,
    /// `snia-cambridge`, `snia-tencent-block`, …).
    pub fn parse(s: &str) -> Result<Format, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "cloudphysics" | "libcachesim-csv" => Ok(Format::CloudPhysics),
            "vscsi" => Ok(Format::Vscsi),
            "cache2k" | "web07" | "i32be" => Ok(Format::Cache2k),
            "oracle-general" | "oraclegeneral" | "oracle" => Ok(Format::OracleGeneral),
            "txt" | "text" | "lines" | "plain" | "lirs" | "gradle" => Ok(Format::Text),
            "twitter" | "twemcache" => Ok(Format::Twitter),
            "csv" => Ok(Format::Csv),
            "access-jsonl" | "jsonl" | "access" => Ok(Format::AccessJsonl),
            "lcs" | "libcachesim" => Ok(Format::Lcs),
            "address" | "address-penalties" => Ok(Format::Address),
            "adapt-size" | "adaptsize" | "webcachesim" => Ok(Format::AdaptSize),
            "arc" => Ok(Format::Arc),
            "lirs2" | "cloud-physics" | "u32be" => Ok(Format::Lirs2),
            "corda" => Ok(Format::Corda),
            "scarab" | "i64be" => Ok(Format::Scarab),
            "msr" | "snia-cambridge" | "msr-cambridge" | "cambridge" => Ok(Format::Msr),
            "systor" | "snia-systor" => Ok(Format::Systor),
            "tencent-block" | "snia-tencent-block" => Ok(Format::TencentBlock),
            "tencent-photo" | "snia-tencent-photo" => Ok(Format::TencentPhoto),
            other => Err(format!(
                "unknown trace format {other:?}; allowed: {}",
                Format::NAMES.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::CloudPhysics => "cloudphysics",
            Format::Vscsi => "vscsi",
            Format::Cache2k => "cache2k",
            Format::OracleGeneral => "oracle-general",
            Format::Text => "txt",
            Format::Twitter => "twitter",
            Format::Csv => "csv",
            Format::AccessJsonl => "access-jsonl",
            Format::Lcs => "lcs",
            Format::Address => "address",
            Format::AdaptSize => "adapt-size",
            Format::Arc => "arc",
            Format::Lirs2 => "lirs2",
            Format::Corda => "corda",
            Format::Scarab => "scarab",
            Format::Msr => "msr",
            Format::Systor => "systor",
            Format::TencentBlock => "tencent-block",
            Format::TencentPhoto => "tencent-photo",
        }
    }

    /// Guesses the format of the file at `path`: from its name (a
    /// compression suffix, `.gz`, `.bz2`, `.xz` or `.zst`, looked through),
    /// else from its first bytes (decompressed): a binary layout or, for
    /// text, the shape of its first line. The rules, in order:
    ///
    /// 1. name: `.vscsi` → `vscsi`; `oracleGeneral` anywhere → `oracle-general`;
    ///    `.lcs` → `lcs`; `.txt` → `txt`; `.jsonl`, `.ndjson`, `.json` → `access-jsonl`;
    /// 2. libCacheSim's lcs magic number → `lcs`;
    /// 3. binary (not printable text with line breaks): `w<digits>.trace` →
    ///    `lirs2`, `web<digits>.trace` and `orm-*.trace` → `cache2k`,
    ///    `corda`/`vaultservice` in the name → `corda`, `scarab`,
    ///    `prods.trace*`, `recs.trace*` → `scarab`; else 8-byte keys by their
    ///    look (words that recur do so at the same parity) → `scarab`, else
    ///    `cache2k` (4-byte keys);
    /// 4. text, by the first line that is not blank, `#` or `*`: the
    ///    CloudPhysics header → `cloudphysics`; the SYSTOR header or line shape
    ///    → `systor`; an MSR line (7 fields, `Read`/`Write` 4th) → `msr`; a
    ///    Twitter line → `twitter`; 5 whole numbers by commas, 0/1 4th →
    ///    `tencent-block`; 8 fields by spaces, `yyyyMMddHHmmss` and a hex id
    ///    → `tencent-photo`; `l|s 0xADDR N` → `address`; `.lis` or 4 whole
    ///    numbers by spaces → `arc`; 3 numbers by spaces (a time, whole id
    ///    and size) → `adapt-size`; a `.trace` or `.trc` name, or a first line with no
    ///    comma and no space (one key per line, LIRS's traces) → `txt`; else
    ///    `csv`.
    ///
    /// Traces that rule 3 cannot tell apart (a `lirs2` file renamed, a
    /// Corda trace without its name) need `--format`.
    pub fn detect(path: &Path) -> io::Result<Format> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = compress::strip_suffix(&name);
        if name.ends_with(".vscsi") {
            return Ok(Format::Vscsi);
        }
        if name.contains("oraclegeneral") {
            return Ok(Format::OracleGeneral);
        }
        if name.ends_with(".lcs") {
            return Ok(Format::Lcs);
        }
        if name.ends_with(".txt") {
            return Ok(Format::Text);
        }
        if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            return Ok(Format::AccessJsonl);
        }
        let mut head = Vec::with_capacity(HEAD);
        open_bytes(path)?.take(HEAD as u64).read_to_end(&mut head)?;
        if lcs::has_magic(&head) {
            return Ok(Format::Lcs);
        }
        if !starts_as_text(&head) {
            if let Some(f) = caffeine::binary_by_name(name) {
                return Ok(f);
            }
            return Ok(if caffeine::looks_like_8_byte_keys(&head) {
                Format::Scarab
            } else {
                Format::Cache2k
            });
        }
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.lines().map(str::trim);
        // The last line of the head may be cut short: only whole lines count.
        let whole_lines = if head.len() < HEAD {
            usize::MAX
        } else {
            text.lines().count() - 1
        };
        let first = lines
            .by_ref()
            .take(whole_lines)
            .find(|l| !(l.is_empty() || l.starts_with('#') || *l == "*"))
            .unwrap_or("");
        Ok(Format::by_first_line(name, first))
    }

    /// Rule 4 of [`Format::detect`]: a text file's format by its `name` and
    /// its `first` line that is not blank, `#` or `*`.
    fn by_first_line(name: &str, first: &str) -> Format {
        if first.eq_ignore_ascii_case("version,time,op,size,lbn") {
            Format::CloudPhysics
        } else if snia::is_systor_header(first) || snia::is_systor_line(first) {
            Format::Systor
        } else if snia::is_msr_line(first) {
            Format::Msr
        } else if twitter(first, 1).is_ok_and(|r| r.is_some()) {
            Format::Twitter
        } else if snia::is_tencent_block_line(first) {
            Format::TencentBlock
        } else if snia::is_tencent_photo_line(first) {
            Format::TencentPhoto
        } else if caffeine::is_address_line(first) {
            Format::Address
        } else if name.ends_with(".lis") || caffeine::is_arc_line(first) {
            Format::Arc
        } else if caffeine::is_adapt_size_line(first) {
            Format::AdaptSize
        } else if name.ends_with(".trace")
            || name.ends_with(".trc")
            || (!first.is_empty() && !first.contains(',') && !first.contains(char::is_whitespace))
        {
            Format::Text
        } else {
            Format::Csv
        }
    }

    /// How keys of this format map to ids.
    pub fn key_space(self) -> KeySpace {
        match self {
            Format::CloudPhysics
            | Format::Vscsi
            | Format::Cache2k
            | Format::OracleGeneral
            | Format::Lcs
            | Format::Address
            | Format::AdaptSize
            | Format::Arc
            | Format::Lirs2
            | Format::Corda
            | Format::Scarab
            | Format::Msr => KeySpace::Numeric,
            Format::Text
            | Format::Twitter
            | Format::Csv
            | Format::AccessJsonl
            | Format::Systor
            | Format::TencentBlock
            | Format::TencentPhoto => KeySpace::Text,
        }
    }
}

/// How a key string maps to the simulation's 64-bit id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpace {
    /// Keys are decimal integers; the id is the number.
    Numeric,
    /// Keys are text; the id is a fixed-seed hash.
    Text,
}

impl KeySpace {
    /// The id of `key` (`None` for a numeric space and a key that is no number).
    pub fn id(self, key: &str) -> Option<u64> {
        match self {
            KeySpace::Numeric => key.parse::<i64>().ok().map(|n| n as u64),
            KeySpace::Text => Some(text_id(key)),
        }
    }
}

/// The fixed-seed (SipHash, zero key) hash of a text key.
pub fn text_id(key: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// Where virtual time comes from for traces without timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Time of the first request.
    pub start: f64,
    /// Requests per second.
    pub rate: f64,
}

impl Clock {
    fn at(&self, index: u64) -> f64 {
        self.start + index as f64 / self.rate.max(1e-9)
    }
}

/// A streaming trace: an iterator of requests or read errors.
pub type Trace = Box<dyn Iterator<Item = io::Result<Request>> + Send>;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The error maker of line `n` (`l`) of a text trace: `what` went wrong,
/// `expected` names the layout.
fn line_error<'a>(n: u64, expected: &'a str, l: &'a str) -> impl Fn(&str) -> io::Error + 'a {
    move |what| bad(format!("line {n}: {what}; expected {expected}: {l:?}"))
}

/// Bytes of a file's start that detection looks at (decompressed).
const HEAD: usize = 1 << 16;

/// Whether the first bytes of the (decompressed) file are printable text
/// with line breaks: a binary trace of integers has NUL and control bytes
/// among its first few records.
fn starts_as_text(head: &[u8]) -> bool {
    let head = &head[..head.len().min(256)];
    !head.is_empty()
        && head
            .iter()
            .all(|&b| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7e))
        && (head.contains(&b'\n') || head.len() < 256)
}

/// Opens `path` as a trace of `format`.
pub fn open(path: &Path, format: Format, clock: Clock) -> io::Result<Trace> {
    let input = open_bytes(path)?;
    Ok(from_reader(input, format, clock))
}

/// A trace of `format` read from `input`.
pub fn from_reader(input: Box<dyn BufRead + Send>, format: Format, clock: Clock) -> Trace {
    // The text formats: the line parser, and the clock for those without timestamps.
    let (parse, timing): (LineParser, Option<Clock>) = match format {
        Format::CloudPhysics => (cloudphysics, None),
        Format::Text => (text_key, Some(clock)),
        Format::Twitter => (twitter, None),
        Format::Csv => (csv, None),
        Format::Address => (caffeine::address, Some(clock)),
        Format::AdaptSize => (caffeine::adapt_size, None),
        Format::Msr => (snia::msr, None),
        Format::Systor => (snia::systor, None),
        Format::TencentBlock => (snia::tencent_block, None),
        Format::TencentPhoto => (snia::tencent_photo, None),
        Format::Vscsi => return Box::new(Records::new(format, input, clock, vscsi)),
        Format::Cache2k => return Box::new(Records::new(format, input, clock, cache2k)),
        Format::OracleGeneral => {
            return Box::new(Records::new(format, input, clock, oracle_general));
        }
        Format::Lirs2 => return Box::new(Records::new(format, input, clock, caffeine::lirs2)),
        Format::Corda | Format::Scarab => {
            return Box::new(Records::new(format, input, clock, caffeine::i64_be));
        }
        Format::Lcs => return Box::new(lcs::Lcs::new(input)),
        Format::Arc => return Box::new(caffeine::ArcTrace::new(input, clock)),
        Format::AccessJsonl => {
            return Box::new(AccessJsonl {
                lines: input,
                line: String::new(),
                n: 0,
                clock,
                index: 0,
                pending: std::collections::VecDeque::new(),
            });
        }
    };
    Box::new(LineTrace::new(format, input, parse, timing))
}

/// The error `e` of a `format` trace, named: `twitter line 3: …`.
fn named(format: Format, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{} {e}", format.name()))
}

fn numeric(id: u64) -> CompactString {
    format_compact!("{}", id as i64)
}

/// Reads the next line into `line` (without the newline); `false` at the end.
fn next_line(input: &mut dyn BufRead, line: &mut String, n: &mut u64) -> io::Result<bool> {
    line.clear();
    if input.read_line(line)? == 0 {
        return Ok(false);
    }
    *n += 1;
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
    Ok(true)
}

/// Turns line `n` (1-based, without the newline) into a request, or
/// `None` for a line to skip.
type LineParser = fn(&str, u64) -> io::Result<Option<Request>>;

/// A text trace read line by line with a [`LineParser`]; errors name the
/// format and the line.
struct LineTrace {
    format: Format,
    lines: Box<dyn BufRead + Send>,
    line: String,
    n: u64,
    parse: LineParser,
    /// Where time comes from, for formats without timestamps.
    clock: Option<Clock>,
    /// Requests so far.
    index: u64,
}

impl LineTrace {
    fn new(
        format: Format,
        lines: Box<dyn BufRead + Send>,
        parse: LineParser,
        clock: Option<Clock>,
    ) -> LineTrace {
        LineTrace {
            format,
            lines,
            line: String::new(),
            n: 0,
            parse,
            clock,
            index: 0,
        }
    }
}

impl Iterator for LineTrace {
    type Item = io::Result<Request>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match next_line(&mut *self.lines, &mut self.line, &mut self.n) {
                Ok(false) => return None,
                Err(e) => {
                    let e = bad(format!("line {}: {e}", self.n + 1));
                    return Some(Err(named(self.format, e)));
                }
                Ok(true) => match (self.parse)(&self.line, self.n) {
                    Ok(None) => continue,
                    Ok(Some(mut r)) => {
                        if let Some(clock) = &self.clock {
                            r.at = clock.at(self.index);
                        }
                        self.index += 1;
                        return Some(Ok(r));
                    }
                    Err(e) => return Some(Err(named(self.format, e))),
                },
            }
        }
    }
}

/// A line of a CloudPhysics (libCacheSim CSV) trace.
fn cloudphysics(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with("version") {
        return Ok(None);
    }
    let err = || {
        bad(format!(
            "line {n}: expected version,time,op,size,lbn: {l:?}"
        ))
    };
    let mut f = l.split(',');
    let (_v, time, op, size, lbn) = (
        f.next().ok_or_else(err)?,
        f.next().ok_or_else(err)?,
        f.next().ok_or_else(err)?,
        f.next().ok_or_else(err)?,
        f.next().ok_or_else(err)?,
    );
    let at: f64 = time.trim().parse().map_err(|_| err())?;
    let op = u32::from_str_radix(op.trim(), 16).map_err(|_| err())?;
    let size: u32 = size.trim().parse().map_err(|_| err())?;
    let lbn: u64 = lbn.trim().parse().map_err(|_| err())?;
    Ok(Some(Request {
        at,
        id: lbn,
        key: numeric(lbn),
        size: size.max(1),
        ttl: None,
        write: op == 0x2a,
    }))
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of input.
fn read_record(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(bad(format!(
                    "truncated record: {got} of {} bytes",
                    buf.len()
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A binary trace of fixed-size records of `N` bytes; `decode` turns record
/// `index` (0-based) into a request.
struct Records<const N: usize> {
    format: Format,
    input: Box<dyn BufRead + Send>,
    clock: Clock,
    n: u64,
    decode: fn(&[u8; N], u64, &Clock) -> Request,
}

impl<const N: usize> Records<N> {
    fn new(
        format: Format,
        input: Box<dyn BufRead + Send>,
        clock: Clock,
        decode: fn(&[u8; N], u64, &Clock) -> Request,
    ) -> Self {
        Records {
            format,
            input,
            clock,
            n: 0,
            decode,
        }
    }
}

impl<const N: usize> Iterator for Records<N> {
    type Item = io::Result<Request>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut rec = [0u8; N];
        match read_record(&mut self.input, &mut rec) {
            Ok(false) => return None,
            Err(e) => {
                let e = bad(format!("record {}: {e}", self.n));
                return Some(Err(named(self.format, e)));
            }
            Ok(true) => {}
        }
        let r = (self.decode)(&rec, self.n, &self.clock);
        self.n += 1;
        Some(Ok(r))
    }
}

fn u32_le(rec: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]])
}

fn u64_le(rec: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[i..i + 8]);
    u64::from_le_bytes(b)
}

/// vscsi: `u32 sn, u32 len, u32 nSG, u16 cmd, u16 ver, u64 lbn, u64 ts` (µs).
fn vscsi(rec: &[u8; 32], _: u64, _: &Clock) -> Request {
    let lbn = u64_le(rec, 16);
    Request {
        at: u64_le(rec, 24) as f64 / 1e6,
        id: lbn,
        key: numeric(lbn),
        size: u32_le(rec, 4).max(1),
        ttl: None,
        write: u16::from_le_bytes([rec[12], rec[13]]) == 0x2a,
    }
}

/// cache2k: one big-endian `i32` key; time from the clock.
fn cache2k(rec: &[u8; 4], index: u64, clock: &Clock) -> Request {
    let id = i64::from(i32::from_be_bytes(*rec)) as u64;
    Request {
        at: clock.at(index),
        id,
        key: numeric(id),
        size: 1,
        ttl: None,
        write: false,
    }
}

/// libCacheSim's oracleGeneral: `u32 time, u64 obj_id, u32 obj_size, i64
/// next_access_vtime` (the last is not used: the oracle modes work it out).
fn oracle_general(rec: &[u8; 24], _: u64, _: &Clock) -> Request {
    let id = u64_le(rec, 4);
    Request {
        at: f64::from(u32_le(rec, 0)),
        id,
        key: numeric(id),
        size: u32_le(rec, 12).max(1),
        ttl: None,
        write: false,
    }
}

/// One key per line (time from the clock); blank lines, `#` comments and
/// LIRS's `*` checkpoint markers are skipped.
fn text_key(line: &str, _: u64) -> io::Result<Option<Request>> {
    let key = line.trim();
    if key.is_empty() || key.starts_with('#') || key == "*" {
        return Ok(None);
    }
    Ok(Some(Request::read_of(0.0, key)))
}

/// A line of a Twitter cache trace:
/// `timestamp,key,key_size,value_size,client_id,operation,ttl`.
fn twitter(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() {
        return Ok(None);
    }
    let err = line_error(
        n,
        "timestamp,key,key_size,value_size,client_id,operation,ttl",
        l,
    );
    let f: Vec<&str> = l.split(',').map(str::trim).collect();
    let [ts, key, key_size, value_size, _client, op, ttl] = f[..] else {
        return Err(err(&format!("{} fields", f.len())));
    };
    let number = |s: &str, what: &str| s.parse::<u64>().map_err(|_| err(what));
    let at = number(ts, "timestamp is not a whole number of seconds")?;
    if key.is_empty() {
        return Err(err("no key"));
    }
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(err("operation is not a command name"));
    }
    let size = number(key_size, "key size is not a number")?
        .saturating_add(number(value_size, "value size is not a number")?);
    let ttl = number(ttl, "ttl is not a number")?;
    Ok(Some(Request {
        at: at as f64,
        id: text_id(key),
        key: CompactString::from(key),
        size: u32::try_from(size).unwrap_or(u32::MAX).max(1),
        ttl: (ttl > 0).then_some(ttl as f64),
        write: !(op.eq_ignore_ascii_case("get") || op.eq_ignore_ascii_case("gets")),
    }))
}

/// A line of a CSV trace: `timestamp,key[,size[,ttl]]`.
fn csv(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let err = |what: &str| bad(format!("line {n}: {what}: {l:?}"));
    let mut f = l.split(',');
    let ts = f.next().unwrap_or("").trim();
    let at: f64 = match ts.parse() {
        Ok(t) => t,
        // A first line whose timestamp is no number is a header.
        Err(_) if n == 1 => return Ok(None),
        Err(_) => return Err(err("timestamp is not a number")),
    };
    if !at.is_finite() {
        return Err(err("timestamp is not finite"));
    }
    let key = f.next().map(str::trim).unwrap_or("");
    if key.is_empty() {
        return Err(err("no key"));
    }
    let size = match f.next().map(str::trim) {
        None | Some("") => 1,
        Some(s) => s.parse::<u32>().map_err(|_| err("size is not a number"))?,
    };
    let ttl = match f.next().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<f64>().map_err(|_| err("ttl is not a number"))?),
    };
    if f.next().is_some() {
        return Err(err(
            "more than 4 fields (timestamp,key[,size[,ttl]]; Twitter's 7-field traces: --format twitter)",
        ));
    }
    Ok(Some(Request {
        at,
        id: text_id(key),
        key: CompactString::from(key),
        size: size.max(1),
        ttl,
        write: false,
    }))
}

struct AccessJsonl {
    lines: Box<dyn BufRead + Send>,
    line: String,
    n: u64,
    clock: Clock,
    /// Requests without a time so far (their virtual time comes from the clock).
    index: u64,
    pending: std::collections::VecDeque<Request>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Record {
    Event(AccessEvent),
    Request(AccessRequest),
}

impl AccessJsonl {
    fn request(&mut self, key: &str, at: Option<&AccessTime>) -> Request {
        let at = match at {
            Some(AccessTime::UnixSeconds(s)) => *s,
            Some(AccessTime::Rfc3339(t)) => t.timestamp_micros() as f64 / 1e6,
            None => {
                self.index += 1;
                self.clock.at(self.index - 1)
            }
        };
        Request::read_of(at, key)
    }

    fn parse(&mut self) -> io::Result<()> {
        let l = self.line.trim();
        if l.is_empty() {
            return Ok(());
        }
        let rec: Record = serde_json::from_str(l)
            .map_err(|e| bad(format!("line {}: not an access record: {e}", self.n)))?;
        match rec {
            Record::Event(ev) => {
                let r = self.request(&ev.key, ev.at.as_ref());
                self.pending.push_back(r);
            }
            Record::Request(req) => {
                for k in &req.keys {
                    let r = self.request(k, None);
                    self.pending.push_back(r);
                }
                for ev in &req.events {
                    let r = self.request(&ev.key, ev.at.as_ref());
                    self.pending.push_back(r);
                }
            }
        }
        Ok(())
    }
}

impl Iterator for AccessJsonl {
    type Item = io::Result<Request>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            match next_line(&mut *self.lines, &mut self.line, &mut self.n) {
                Ok(false) => return None,
                Err(e) => {
                    let e = bad(format!("line {}: {e}", self.n + 1));
                    return Some(Err(named(Format::AccessJsonl, e)));
                }
                Ok(true) => {
                    if let Err(e) = self.parse() {
                        return Some(Err(named(Format::AccessJsonl, e)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: Format) -> Vec<Request> {
        let input: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(text.as_bytes().to_vec()));
        let clock = Clock {
            start: 100.0,
            rate: 2.0,
        };
        from_reader(input, format, clock)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    /// Every item `bytes` reads as in `format` (clock from 0, 1 request/s).
    fn results(bytes: &[u8], format: Format) -> Vec<io::Result<Request>> {
        let input: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(bytes.to_vec()));
        let clock = Clock {
            start: 0.0,
            rate: 1.0,
        };
        from_reader(input, format, clock).collect()
    }

    /// The error the first item of `bytes` gives.
    fn first_error(bytes: &[u8], format: Format) -> io::Error {
        results(bytes, format).remove(0).unwrap_err()
    }

    #[test]
    fn csv_with_header_sizes_and_ttls() {
        let r = read("timestamp,key\n1.5,a\n2,b,300\n\n3,a,10,60\n", Format::Csv);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].at, r[0].key.as_str(), r[0].size), (1.5, "a", 1));
        assert_eq!((r[1].size, r[1].ttl), (300, None));
        assert_eq!((r[2].size, r[2].ttl), (10, Some(60.0)));
        assert_eq!(r[0].id, r[2].id);
        assert_ne!(r[0].id, r[1].id);
    }

    #[test]
    fn twitter_lines() {
        let text = concat!(
            "0,user:1,10,230,7,get,0\n",
            "1,user:2,10,100,7,set,3600\n",
            "2,user:1,10,230,9,gets,0\n",
        );
        let r = read(text, Format::Twitter);
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.at, r.key.as_str(), r.size, r.ttl, r.write))
            .collect();
        assert_eq!(
            got,
            [
                (0.0, "user:1", 240, None, false),
                (1.0, "user:2", 110, Some(3600.0), true),
                (2.0, "user:1", 240, None, false),
            ]
        );
        assert_eq!(r[0].id, r[2].id);
        // A line with the wrong number of fields is an error naming them.
        let e = first_error(b"0,user:1,10,230,7,get\n", Format::Twitter);
        assert!(e.to_string().contains("6 fields"), "{e}");
    }

    #[test]
    fn twitter_and_plain_csv_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tw = dir.path().join("cluster52.csv");
        std::fs::write(&tw, "0,user:1,10,230,7,get,0\n").unwrap();
        assert_eq!(Format::detect(&tw).unwrap(), Format::Twitter);
        let plain = dir.path().join("plain.csv");
        std::fs::write(&plain, "timestamp,key\n0,user:1\n").unwrap();
        assert_eq!(Format::detect(&plain).unwrap(), Format::Csv);
        // Read as plain CSV, a Twitter line is refused, not misread.
        let e = first_error(b"0,user:1,10,230,7,get,0\n", Format::Csv);
        assert!(e.to_string().contains("--format twitter"), "{e}");
    }

    #[test]
    fn csv_rejects_bad_lines_after_the_first() {
        let r = results(b"1,a\nx,b\n", Format::Csv);
        assert!(r[0].is_ok());
        assert!(r[1].is_err());
    }

    #[test]
    fn access_jsonl_events_and_bodies() {
        let text = concat!(
            "{\"key\": \"a\", \"at\": 10.5}\n",
            "{\"key\": \"b\", \"at\": \"1970-01-01T00:00:20Z\"}\n",
            "{\"keys\": [\"c\", \"d\"]}\n",
            "{\"key\": \"e\"}\n",
        );
        let r = read(text, Format::AccessJsonl);
        let got: Vec<(&str, f64)> = r.iter().map(|r| (r.key.as_str(), r.at)).collect();
        assert_eq!(
            got,
            [
                ("a", 10.5),
                ("b", 20.0),
                ("c", 100.0),
                ("d", 100.5),
                ("e", 101.0)
            ]
        );
    }

    #[test]
    fn text_lines_skip_blanks_and_comments() {
        let r = read("# keys\nuser:1\n\n  user:2  \r\nuser:1\n", Format::Text);
        let got: Vec<(&str, f64)> = r.iter().map(|r| (r.key.as_str(), r.at)).collect();
        assert_eq!(
            got,
            [("user:1", 100.0), ("user:2", 100.5), ("user:1", 101.0)]
        );
        assert_eq!(r[0].id, r[2].id);
        assert_eq!(r[0].id, text_id("user:1"));
    }

    #[test]
    fn oracle_general_records() {
        let mut bytes = Vec::new();
        for (t, id, size) in [(7u32, 42u64, 4096u32), (9, u64::MAX, 0)] {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&size.to_le_bytes());
            bytes.extend_from_slice(&5i64.to_le_bytes());
        }
        let r: Vec<Request> = results(&bytes, Format::OracleGeneral)
            .into_iter()
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(
            (r[0].at, r[0].id, r[0].key.as_str(), r[0].size),
            (7.0, 42, "42", 4096)
        );
        // Ids above i64::MAX round-trip through the numeric key space; size 0 counts as 1.
        assert_eq!((r[1].id, r[1].size), (u64::MAX, 1));
        assert_eq!(KeySpace::Numeric.id(&r[1].key), Some(u64::MAX));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut io::Cursor::new(data), &mut out).unwrap();
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// Writes `bytes` to `name` in `dir`.
    fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Every request of the file at `path`, read as `format`.
    fn read_path(path: &Path, format: Format) -> Vec<Request> {
        let clock = Clock {
            start: 0.0,
            rate: 1.0,
        };
        open(path, format, clock)
            .unwrap()
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    fn keys(r: &[Request]) -> Vec<&str> {
        r.iter().map(|r| r.key.as_str()).collect()
    }

    /// Big-endian `i32` records, as cache2k traces are.
    fn i32_records(keys: &[i32]) -> Vec<u8> {
        keys.iter().flat_map(|k| k.to_be_bytes()).collect()
    }

    #[test]
    fn gzip_every_member_of_a_multi_member_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = gzip(b"user:1\nuser:2\n");
        bytes.extend(gzip(b"user:3\n"));
        let path = file(&dir, "keys.txt.gz", &bytes);
        assert_eq!(Format::detect(&path).unwrap(), Format::Text);
        let r = read_path(&path, Format::Text);
        assert_eq!(keys(&r), ["user:1", "user:2", "user:3"]);
        assert_eq!(r[2].at, 2.0);
    }

    #[test]
    fn bzip2_every_stream_of_a_binary_trace() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = bzip2(&i32_records(&[7, -1]));
        bytes.extend(bzip2(&i32_records(&[7])));
        let path = file(&dir, "web.trace.bz2", &bytes);
        // `.bz2` is looked through: a binary `.trace`.
        assert_eq!(Format::detect(&path).unwrap(), Format::Cache2k);
        let r = read_path(&path, Format::Cache2k);
        assert_eq!(keys(&r), ["7", "-1", "7"]);
        assert_eq!((r[0].id, r[1].id), (7, u64::MAX));
    }

    #[test]
    fn compression_is_known_by_its_magic_number_without_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let csv = b"version,time,op,size,lbn\n1,5,28,512,42\n1,6,2a,1024,43\n";
        for (name, bytes) in [
            ("gz", gzip(csv)),
            ("bz", bzip2(csv)),
            ("x", xz(csv)),
            ("z", zstd(csv)),
            ("plain", csv.to_vec()),
        ] {
            let path = file(&dir, name, &bytes);
            assert_eq!(
                Format::detect(&path).unwrap(),
                Format::CloudPhysics,
                "{name}"
            );
            let r = read_path(&path, Format::CloudPhysics);
            let got: Vec<_> = r.iter().map(|r| (r.at, r.id, r.size, r.write)).collect();
            assert_eq!(
                got,
                [(5.0, 42, 512, false), (6.0, 43, 1024, true)],
                "{name}"
            );
        }
        assert_eq!(
            Compression::from_magic(&gzip(b"x")),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_magic(&bzip2(b"x")),
            Some(Compression::Bzip2)
        );
        assert_eq!(Compression::from_magic(&xz(b"x")), Some(Compression::Xz));
        assert_eq!(
            Compression::from_magic(&zstd(b"x")),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_magic(b"BZh"), None);
        assert_eq!(Compression::from_magic(b"1,2\n"), None);
    }

    #[test]
    fn every_compression_suffix_is_looked_through() {
        let dir = tempfile::tempdir().unwrap();
        let records = i32_records(&[1, 2, 3]);
        for (name, bytes) in [
            ("a.trace.gz", gzip(&records)),
            ("a.trace.bz2", bzip2(&records)),
            ("a.trace.xz", xz(&records)),
            ("a.trace.zst", zstd(&records)),
        ] {
            let path = file(&dir, name, &bytes);
            assert_eq!(Format::detect(&path).unwrap(), Format::Cache2k, "{name}");
        }
        let path = file(&dir, "cloudPhysicsIO.vscsi.gz", &gzip(&[0u8; 32]));
        assert_eq!(Format::detect(&path).unwrap(), Format::Vscsi);
    }

    #[test]
    fn truncated_or_corrupt_compressed_files_are_errors_naming_the_compression() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..5000).map(|i| format!("user:{i}\n")).collect();
        for (name, bytes, label) in [
            ("t.txt.gz", gzip(text.as_bytes()), "gzip"),
            ("t.txt.bz2", bzip2(text.as_bytes()), "bzip2"),
            ("t.txt.xz", xz(text.as_bytes()), "xz"),
        ] {
            let cut = &bytes[..bytes.len() / 2];
            let path = file(&dir, name, cut);
            let clock = Clock {
                start: 0.0,
                rate: 1.0,
            };
            let e = open(&path, Format::Text, clock)
                .and_then(|t| t.collect::<io::Result<Vec<_>>>())
                .unwrap_err();
            assert!(e.to_string().contains(label), "{name}: {e}");
        }
        // A `.gz` suffix on a file that is not gzip: read as it is.
        let path = file(&dir, "plain.txt.gz", b"user:1\n");
        assert_eq!(keys(&read_path(&path, Format::Text)), ["user:1"]);
    }

    /// `(at, key, size, write)` of each request.
    fn rows(r: &[Request]) -> Vec<(f64, &str, u32, bool)> {
        r.iter()
            .map(|r| (r.at, r.key.as_str(), r.size, r.write))
            .collect()
    }

    /// Every request of `bytes` read as `format` (clock from 0, 1 request/s).
    fn all(bytes: &[u8], format: Format) -> Vec<Request> {
        results(bytes, format)
            .into_iter()
            .collect::<io::Result<_>>()
            .unwrap()
    }

    /// The message of the first error reading `bytes` as `format` gives.
    fn error(bytes: &[u8], format: Format) -> String {
        results(bytes, format)
            .into_iter()
            .find_map(Result::err)
            .expect("an error")
            .to_string()
    }

    #[test]
    fn lirs_text_skips_checkpoint_markers() {
        let r = read("5\n*\n7\n\n5\n*\n", Format::Text);
        assert_eq!(
            rows(&r),
            [
                (100.0, "5", 1, false),
                (100.5, "7", 1, false),
                (101.0, "5", 1, false)
            ]
        );
        assert_eq!(Format::parse("lirs").unwrap(), Format::Text);
    }

    #[test]
    fn address_loads_and_stores() {
        let text = "l 0x1fffff50 1\ns 0x1FFFFF58 2 200 1200\nl 0x10 0\n";
        let r = read(text, Format::Address);
        assert_eq!(
            rows(&r),
            [
                (100.0, "536870736", 1, false),
                (100.5, "536870744", 1, true),
                (101.0, "16", 1, false),
            ]
        );
        assert_eq!(r[0].id, 0x1fff_ff50);
        let e = error(b"l 0x10 1\nx 0x10 1\n", Format::Address);
        assert!(e.starts_with("address line 2: access type"), "{e}");
        let e = error(b"l 0xzz 1\n", Format::Address);
        assert!(
            e.contains("address line 1: address is not hexadecimal"),
            "{e}"
        );
    }

    #[test]
    fn adapt_size_time_id_size() {
        let r = read("1 42 100\n2 7 0\n3 42 100 5\n", Format::AdaptSize);
        assert_eq!(
            rows(&r),
            [
                (1.0, "42", 100, false),
                (2.0, "7", 1, false),
                (3.0, "42", 100, false)
            ]
        );
        assert_eq!((r[0].id, r[1].id), (42, 7));
        let e = error(b"1 abc 100\n", Format::AdaptSize);
        assert!(e.starts_with("adapt-size line 1: id is not"), "{e}");
        let e = error(b"1 4\n", Format::AdaptSize);
        assert!(e.contains("fewer than 3 fields"), "{e}");
    }

    #[test]
    fn arc_ranges_read_every_block() {
        let r = read("100 3 0 1\n\n7 1 0 2\n9 0 0 3\n8 1 0 4\n", Format::Arc);
        assert_eq!(
            rows(&r),
            [
                (100.0, "100", 512, false),
                (100.5, "101", 512, false),
                (101.0, "102", 512, false),
                (101.5, "7", 512, false),
                (102.0, "8", 512, false),
            ]
        );
        let e = error(b"1 1 0 1\n100 x 0 1\n", Format::Arc);
        assert!(e.starts_with("arc line 2: block count"), "{e}");
    }

    #[test]
    fn lirs2_unsigned_32_bit_keys() {
        let bytes: Vec<u8> = [5u32, u32::MAX]
            .iter()
            .flat_map(|k| k.to_be_bytes())
            .collect();
        let r = all(&bytes, Format::Lirs2);
        assert_eq!(
            rows(&r),
            [(0.0, "5", 1, false), (1.0, "4294967295", 1, false)]
        );
        assert_eq!(r[1].id, u64::from(u32::MAX));
        let e = error(&bytes[..6], Format::Lirs2);
        assert!(
            e.starts_with("lirs2 record 1: truncated record: 2 of 4 bytes"),
            "{e}"
        );
    }

    #[test]
    fn corda_and_scarab_signed_64_bit_keys() {
        let bytes: Vec<u8> = [1i64, -2, i64::MAX]
            .iter()
            .flat_map(|k| k.to_be_bytes())
            .collect();
        for format in [Format::Corda, Format::Scarab] {
            let r = all(&bytes, format);
            assert_eq!(
                rows(&r),
                [
                    (0.0, "1", 1, false),
                    (1.0, "-2", 1, false),
                    (2.0, "9223372036854775807", 1, false),
                ]
            );
            assert_eq!(r[1].id, u64::MAX - 1);
            assert_eq!(KeySpace::Numeric.id(&r[1].key), Some(r[1].id));
            let e = error(&bytes[..12], format);
            assert!(
                e.starts_with(&format!("{} record 1: truncated", format.name())),
                "{e}"
            );
        }
    }

    #[test]
    fn msr_cambridge_lines() {
        let text = concat!(
            "128166385295514663,hm,0,Write,9056014336,2048,2833\n",
            "128166385368421959,hm,0,Read,1898643456,4096,63820\n",
        );
        let r = read(text, Format::Msr);
        assert_eq!(r.len(), 2);
        assert!(
            (r[0].at - 1_172_164_929.551_466_3).abs() < 1e-6,
            "{}",
            r[0].at
        );
        assert!(
            (r[1].at - 1_172_164_936.842_196).abs() < 1e-6,
            "{}",
            r[1].at
        );
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.id, r.key.as_str(), r.size, r.write))
            .collect();
        assert_eq!(
            got,
            [
                (9_056_014_336, "9056014336", 2048, true),
                (1_898_643_456, "1898643456", 4096, false),
            ]
        );
        let e = error(
            b"128166385295514663,hm,0,Write,9056014336,2048,2833\n1,hm,0,Read,x,512,1\n",
            Format::Msr,
        );
        assert!(
            e.starts_with("msr line 2: offset is not a whole number"),
            "{e}"
        );
        let e = error(b"1,hm,0,Delete,0,512,1\n", Format::Msr);
        assert!(e.contains("type is not Read or Write"), "{e}");
        let e = error(b"1,hm,0,Read,0,512\n", Format::Msr);
        assert!(e.contains("msr line 1: 6 fields"), "{e}");
    }

    #[test]
    fn systor_lines_with_headers_anywhere() {
        let text = concat!(
            "Timestamp,Response,IOType,LUN,Offset,Size\n",
            "1456095145.133076000,0.000806000,R,0,899056122368,131072\n",
            "1456095145.5,,W,6,4096,4096\n",
            "Timestamp,Response,IOType,LUN,Offset,Size\n",
            "1456095146,0.1,,0,0,0\n",
        );
        let r = read(text, Format::Systor);
        assert_eq!(
            rows(&r),
            [
                (1_456_095_145.133_076, "0:899056122368", 131_072, false),
                (1_456_095_145.5, "6:4096", 4096, true),
                (1_456_095_146.0, "0:0", 1, false),
            ]
        );
        assert_eq!(r[1].id, text_id("6:4096"));
        let e = error(b"1.5,0.1,R,0,4096\n", Format::Systor);
        assert!(e.starts_with("systor line 1: 5 fields"), "{e}");
        let e = error(b"1.5,0.1,X,0,0,4096\n", Format::Systor);
        assert!(e.contains("IOType is not R, W or blank"), "{e}");
        let e = error(b"1.5,0.1,R,0,0,big\n", Format::Systor);
        assert!(e.contains("size is not a whole number"), "{e}");
    }

    #[test]
    fn tencent_block_lines() {
        let text = "1538323199,105352008,584,1,1576\n1538323200,0,8,0,2\n";
        let r = read(text, Format::TencentBlock);
        assert_eq!(
            rows(&r),
            [
                (1_538_323_199.0, "1576:105352008", 584 * 512, true),
                (1_538_323_200.0, "2:0", 4096, false),
            ]
        );
        let e = error(b"1538323199,105352008,584,2,1576\n", Format::TencentBlock);
        assert!(e.starts_with("tencent-block line 1: IOType"), "{e}");
        let e = error(b"1538323199,-1,584,0,1576\n", Format::TencentBlock);
        assert!(e.contains("offset is not a whole number"), "{e}");
    }

    #[test]
    fn tencent_photo_lines() {
        let text = concat!(
            "20160201164559 001488a9e71a3064716358a6e62a99344068d7bd 0 m 80234 1 PHONE 0\n",
            "20160201164604 00d5ad99b04d0865c7db2ae4a2f634d6c7a7933d 5 m 24560 1 PC 2\n",
        );
        let r = read(text, Format::TencentPhoto);
        assert_eq!(
            rows(&r),
            [
                (
                    1_454_345_159.0,
                    "001488a9e71a3064716358a6e62a99344068d7bd",
                    80_234,
                    false
                ),
                (
                    1_454_345_164.0,
                    "00d5ad99b04d0865c7db2ae4a2f634d6c7a7933d",
                    24_560,
                    false
                ),
            ]
        );
        let e = error(
            b"2016020116455 001488a9e71a3064716358a6e62a99344068d7bd 0 m 80234 1 PHONE 0\n",
            Format::TencentPhoto,
        );
        assert!(e.starts_with("tencent-photo line 1: timestamp"), "{e}");
        let e = error(b"20160201164559 0014 0 m\n", Format::TencentPhoto);
        assert!(e.contains("4 fields"), "{e}");
    }

    /// An lcs file of `version` with `records` (each already laid out).
    fn lcs_file(version: u64, records: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0u8; lcs::HEADER];
        bytes[..8].copy_from_slice(&lcs::MAGIC.to_le_bytes());
        bytes[8..16].copy_from_slice(&version.to_le_bytes());
        bytes[lcs::HEADER - 8..].copy_from_slice(&lcs::MAGIC.to_le_bytes());
        for r in records {
            bytes.extend_from_slice(r);
        }
        bytes
    }

    /// A record: the fields' little-endian bytes in order.
    fn le(fields: &[&[u8]]) -> Vec<u8> {
        fields.concat()
    }

    #[test]
    fn lcs_versions_1_2_and_3() {
        let v1 = lcs_file(
            1,
            &[
                le(&[
                    &7u32.to_le_bytes(),
                    &42u64.to_le_bytes(),
                    &4096u32.to_le_bytes(),
                    &(-1i64).to_le_bytes(),
                ]),
                le(&[
                    &9u32.to_le_bytes(),
                    &u64::MAX.to_le_bytes(),
                    &0u32.to_le_bytes(),
                    &5i64.to_le_bytes(),
                ]),
            ],
        );
        let r = all(&v1, Format::Lcs);
        assert_eq!(rows(&r), [(7.0, "42", 4096, false), (9.0, "-1", 1, false)]);
        assert_eq!(r[1].id, u64::MAX);
        // Version 2: op 1 (get) reads, op 3 (set) and 9 (delete) write; tenant above the op.
        let v2 = lcs_file(
            2,
            &[1u32, 3, 9]
                .iter()
                .map(|&op| {
                    le(&[
                        &10u32.to_le_bytes(),
                        &5u64.to_le_bytes(),
                        &100u32.to_le_bytes(),
                        &(op | 7 << 8).to_le_bytes(),
                        &(-1i64).to_le_bytes(),
                    ])
                })
                .collect::<Vec<_>>(),
        );
        let r = all(&v2, Format::Lcs);
        let writes: Vec<bool> = r.iter().map(|r| r.write).collect();
        assert_eq!(writes, [false, true, true]);
        assert!(
            r.iter()
                .all(|r| (r.at, r.id, r.size, r.ttl) == (10.0, 5, 100, None))
        );
        // Version 3: an i64 size and a TTL (0 = none); version 4 adds a feature.
        let v3 = |ttl: u32, extra: &[u8]| {
            le(&[
                &3u32.to_le_bytes(),
                &8u64.to_le_bytes(),
                &70_000i64.to_le_bytes(),
                &12u32.to_le_bytes(),
                &ttl.to_le_bytes(),
                &(-1i64).to_le_bytes(),
                extra,
            ])
        };
        let r = all(&lcs_file(3, &[v3(600, &[]), v3(0, &[])]), Format::Lcs);
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.at, r.id, r.size, r.ttl, r.write))
            .collect();
        assert_eq!(
            got,
            [
                (3.0, 8, 70_000, Some(600.0), false),
                (3.0, 8, 70_000, None, false)
            ]
        );
        let r = all(&lcs_file(4, &[v3(1, &[0; 4]), v3(2, &[0; 4])]), Format::Lcs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].ttl, Some(2.0));
    }

    /// An lcs file of the early layout: a 1 KiB header with `format` and
    /// the field numbers `[id, size, time, op, ttl]`, then `records`.
    fn early_lcs_file(format: &str, fields: [u8; 5], item: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0u8; lcs::EARLY_HEADER];
        bytes[..8].copy_from_slice(&lcs::MAGIC.to_le_bytes());
        bytes[8..8 + format.len()].copy_from_slice(format.as_bytes());
        let [id, size, time, op, ttl] = fields;
        (bytes[248], bytes[249], bytes[250], bytes[253], bytes[254]) = (id, size, time, op, ttl);
        bytes[1004..1008].copy_from_slice(&item.to_le_bytes());
        bytes[1016..].copy_from_slice(&lcs::MAGIC.to_le_bytes());
        for r in records {
            bytes.extend_from_slice(r);
        }
        bytes
    }

    #[test]
    fn lcs_early_layout_with_a_format_string() {
        // oracleGeneral's record, described: time, id, size, next access.
        let rec = |t: u32, id: u64, size: u32| {
            le(&[
                &t.to_le_bytes(),
                &id.to_le_bytes(),
                &size.to_le_bytes(),
                &(-1i64).to_le_bytes(),
            ])
        };
        let bytes = early_lcs_file(
            "<IQIq",
            [2, 3, 1, 0, 0],
            24,
            &[rec(5, 42, 512), rec(6, 43, 0)],
        );
        let r = all(&bytes, Format::Lcs);
        assert_eq!(rows(&r), [(5.0, "42", 512, false), (6.0, "43", 1, false)]);
        // With an op (a byte, 3 = set) and a TTL field.
        let rec = |op: u8, ttl: u32| {
            le(&[
                &9u32.to_le_bytes(),
                &7u64.to_le_bytes(),
                &[op],
                &ttl.to_le_bytes(),
            ])
        };
        let bytes = early_lcs_file("<IQBI", [2, 0, 1, 3, 4], 17, &[rec(1, 0), rec(3, 60)]);
        let r = all(&bytes, Format::Lcs);
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.at, r.id, r.size, r.ttl, r.write))
            .collect();
        assert_eq!(
            got,
            [(9.0, 7, 1, None, false), (9.0, 7, 1, Some(60.0), true)]
        );
        // A format whose fields do not add up to the record size is refused.
        let e = error(
            &early_lcs_file("<IQIq", [2, 3, 1, 0, 0], 28, &[]),
            Format::Lcs,
        );
        assert!(
            e.contains("records of 28 bytes, but the format adds up to 24"),
            "{e}"
        );
        let e = error(
            &early_lcs_file("<IQz", [2, 3, 1, 0, 0], 12, &[]),
            Format::Lcs,
        );
        assert!(e.contains("unknown field type 'z'"), "{e}");
        let e = error(
            &early_lcs_file(">IQIq", [2, 3, 1, 0, 0], 24, &[]),
            Format::Lcs,
        );
        assert!(e.contains("not little-endian"), "{e}");
    }

    #[test]
    fn lcs_bad_headers_and_records() {
        let e = error(&lcs_file(9, &[]), Format::Lcs);
        assert!(e.contains("lcs header: unknown version 9"), "{e}");
        let mut bytes = lcs_file(1, &[]);
        bytes[0] = 0;
        let e = error(&bytes, Format::Lcs);
        assert!(e.contains("lcs header: start magic"), "{e}");
        let e = error(&lcs_file(1, &[])[..100], Format::Lcs);
        assert!(e.contains("lcs header: truncated record"), "{e}");
        let e = error(&lcs_file(1, &[vec![0; 24], vec![0; 10]]), Format::Lcs);
        assert!(
            e.starts_with("lcs record 1: truncated record: 10 of 24 bytes"),
            "{e}"
        );
        assert!(all(&lcs_file(1, &[]), Format::Lcs).is_empty());
    }

    #[test]
    fn eight_byte_keys_are_told_from_four_byte_ones() {
        // Keys that recur, some of them side by side.
        let mut seq = Vec::new();
        let mut x: u64 = 1;
        for i in 0..4000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seq.push(if i % 3 == 0 { x >> 54 } else { x >> 33 });
        }
        let as_i32: Vec<u8> = seq.iter().flat_map(|&k| (k as i32).to_be_bytes()).collect();
        let as_i64: Vec<u8> = seq.iter().flat_map(|&k| (k as i64).to_be_bytes()).collect();
        let hashed: Vec<u8> = seq
            .iter()
            .flat_map(|&k| text_id(&k.to_string()).to_be_bytes())
            .collect();
        assert!(!caffeine::looks_like_8_byte_keys(&as_i32));
        assert!(caffeine::looks_like_8_byte_keys(&as_i64));
        assert!(caffeine::looks_like_8_byte_keys(&hashed));
        assert!(!caffeine::looks_like_8_byte_keys(&as_i64[..64]));
    }

    #[test]
    fn every_format_is_detected_from_its_name_or_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let i64s =
            |keys: &[i64]| -> Vec<u8> { keys.iter().flat_map(|k| k.to_be_bytes()).collect() };
        let recurring: Vec<i64> = (0..400).map(|i| (i * 7919) % 97 * 1_000_003).collect();
        let recurring32: Vec<i32> = recurring.iter().map(|&k| k as i32).collect();
        let systor = "1456095145.133076000,0.000806000,R,0,899056122368,131072\n";
        let photo = "20160201164559 001488a9e71a3064716358a6e62a99344068d7bd 0 m 80234 1 PHONE 0\n";
        let cases: Vec<(&str, Vec<u8>, Format)> = vec![
            (
                "gcc.trace.gz",
                gzip(b"l 0x1fffff50 1\ns 0x1fffff58 1\n"),
                Format::Address,
            ),
            (
                "pen.gcc.trace.gz",
                gzip(b"s 0x1fffff50 1 200 1200\n"),
                Format::Address,
            ),
            (
                "request.trace.xz",
                xz(b"1 42 100\n2 7 20\n"),
                Format::AdaptSize,
            ),
            ("P1.lis", b"100 3 0 1\n".to_vec(), Format::Arc),
            ("oltp", b"100 3 0 1\n7 1 0 2\n".to_vec(), Format::Arc),
            (
                "w106.trace.xz",
                xz(&i32_records(&recurring32)),
                Format::Lirs2,
            ),
            (
                "trace_vaultservice.gz",
                gzip(&i64s(&recurring)),
                Format::Corda,
            ),
            (
                "trace_vaultservice_large.gz",
                gzip(&i64s(&[1, 2])),
                Format::Corda,
            ),
            (
                "prods.trace.20160808T073231Z.xz",
                xz(&i64s(&[1, 2])),
                Format::Scarab,
            ),
            ("scarab-recs.trace.xz", xz(&i64s(&[1, 2])), Format::Scarab),
            ("keys.bin", i64s(&recurring), Format::Scarab),
            ("keys.trace", i32_records(&recurring32), Format::Cache2k),
            (
                "orm-busy.trace.xz",
                xz(&i32_records(&recurring32)),
                Format::Cache2k,
            ),
            (
                "msr-cambridge1-sample.csv",
                b"128166385295514663,hm,0,Write,9056014336,2048,2833\n".to_vec(),
                Format::Msr,
            ),
            (
                "systor17-traces-sample.csv.gz",
                gzip(format!("{}\n{systor}", snia::SYSTOR_HEADER).as_bytes()),
                Format::Systor,
            ),
            (
                "systor17-additional-sample.csv.gz",
                gzip(systor.as_bytes()),
                Format::Systor,
            ),
            (
                "cloud_storage-sample.bz2",
                bzip2(b"1538323199,105352008,584,1,1576\n"),
                Format::TencentBlock,
            ),
            (
                "cloud_photos-sample.bz2",
                bzip2(photo.as_bytes()),
                Format::TencentPhoto,
            ),
            ("cloudPhysicsIO.vscsi.lcs", lcs_file(1, &[]), Format::Lcs),
            ("trace.bin.zst", zstd(&lcs_file(2, &[])), Format::Lcs),
            ("2_pools.trace.gz", gzip(b"*\n1\n2\n*\n"), Format::Text),
            ("multi2.trc.gz", gzip(b"1\n2\n"), Format::Text),
            ("keys", b"7\n8\n".to_vec(), Format::Text),
            (
                "trace.csv",
                b"version,time,op,size,lbn\n1,1,28,512,1\n".to_vec(),
                Format::CloudPhysics,
            ),
            (
                "cluster52.csv",
                b"0,user:1,10,230,7,get,0\n".to_vec(),
                Format::Twitter,
            ),
            (
                "plain.csv",
                b"timestamp,key\n0,user:1\n".to_vec(),
                Format::Csv,
            ),
            ("noheader.csv", b"0,user:1\n".to_vec(), Format::Csv),
            ("keys.txt", b"1 2 3\n".to_vec(), Format::Text),
            ("web.trace", b"user:1\nuser:2\n".to_vec(), Format::Text),
        ];
        for (name, bytes, format) in cases {
            let path = file(&dir, name, &bytes);
            assert_eq!(Format::detect(&path).unwrap(), format, "{name}");
        }
    }

    #[test]
    fn format_names_round_trip() {
        for name in Format::NAMES {
            assert_eq!(Format::parse(name).unwrap().name(), name);
        }
        assert!(
            Format::parse("parquet")
                .unwrap_err()
                .contains("oracle-general")
        );
    }

    #[test]
    fn key_spaces() {
        assert_eq!(KeySpace::Numeric.id("42"), Some(42));
        assert_eq!(KeySpace::Numeric.id("-1"), Some(u64::MAX));
        assert_eq!(KeySpace::Numeric.id("x"), None);
        assert_eq!(KeySpace::Text.id("x"), Some(text_id("x")));
    }
}
