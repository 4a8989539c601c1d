//! The record layouts of traces that Caffeine's simulator bundles (beside
//! cache2k's, which the parent module reads): UCSD's memory address traces,
//! AdaptSize's request logs, ARC's block ranges, LIRS2's CloudPhysics
//! traces, and Corda's and Scarab's 64-bit keys. The layouts were learned
//! from Caffeine's readers; this is an independent implementation.

use std::io::{self, BufRead};

use compact_str::CompactString;

use super::{Clock, Format, Request, bad, line_error, next_line, numeric};

/// A request for the numeric key `id`, at time 0 (the caller sets it).
fn numeric_read(id: u64, size: u32, write: bool) -> Request {
    Request {
        at: 0.0,
        id,
        key: numeric(id),
        size: size.max(1),
        ttl: None,
        write,
    }
}

/// A line of a memory address trace (UCSD CSE 240A, Caffeine's `address`):
/// `TYPE 0xADDRESS INSTRUCTIONS [...]`, `TYPE` `l` (load) or `s` (store);
/// Caffeine's variants add hit and miss penalties after the three, which
/// are not used. Time comes from the clock.
pub(super) fn address(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() {
        return Ok(None);
    }
    let err = line_error(n, "`l|s 0xADDRESS INSTRUCTIONS`", l);
    let mut f = l.split_ascii_whitespace();
    let write = match f.next() {
        Some("l" | "L") => false,
        Some("s" | "S") => true,
        _ => return Err(err("access type is not l (load) or s (store)")),
    };
    let address = f.next().ok_or_else(|| err("no address"))?;
    let hex = address
        .strip_prefix("0x")
        .or_else(|| address.strip_prefix("0X"))
        .ok_or_else(|| err("address does not start with 0x"))?;
    let id = u64::from_str_radix(hex, 16).map_err(|_| err("address is not hexadecimal"))?;
    Ok(Some(numeric_read(id, 1, write)))
}

/// Whether `line` has the shape of an address trace line: `l` or `s`, a
/// `0x` hexadecimal address and a count of instructions.
pub(super) fn is_address_line(line: &str) -> bool {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    f.len() >= 3
        && matches!(f[0], "l" | "s" | "L" | "S")
        && f[1]
            .strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        && is_digits(f[2])
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A line of an AdaptSize / webcachesim request log: `TIME ID SIZE`, all
/// whole numbers, time in seconds, size in bytes (further columns, which
/// webcachesim's extended logs have, are not used).
pub(super) fn adapt_size(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let err = line_error(n, "`TIME ID SIZE`", l);
    let mut f = l.split_ascii_whitespace();
    let (Some(time), Some(id), Some(size)) = (f.next(), f.next(), f.next()) else {
        return Err(err("fewer than 3 fields"));
    };
    let at: f64 = time
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| err("time is not a number"))?;
    let id = parse_id(id).ok_or_else(|| err("id is not a whole number"))?;
    let size: u64 = size
        .parse()
        .map_err(|_| err("size is not a whole number"))?;
    let mut r = numeric_read(id, saturate(size), false);
    r.at = at;
    Ok(Some(r))
}

/// A whole number, negative ones as their two's complement.
pub(super) fn parse_id(s: &str) -> Option<u64> {
    s.parse::<u64>()
        .ok()
        .or_else(|| s.parse::<i64>().ok().map(|i| i as u64))
}

pub(super) fn saturate(size: u64) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// Bytes of the blocks of an ARC trace.
pub(super) const ARC_BLOCK: u32 = 512;

/// An ARC trace (Megiddo and Modha's, `*.lis`): `START COUNT IGNORED
/// REQUEST` per line, a read of the `COUNT` blocks `START`,
/// `START + 1`, …; one request per block, 512 bytes each, time from the
/// clock.
pub(super) struct ArcTrace {
    lines: Box<dyn BufRead + Send>,
    line: String,
    n: u64,
    clock: Clock,
    index: u64,
    /// The blocks of the current line still to yield.
    next: u64,
    end: u64,
}

impl ArcTrace {
    pub(super) fn new(lines: Box<dyn BufRead + Send>, clock: Clock) -> ArcTrace {
        ArcTrace {
            lines,
            line: String::new(),
            n: 0,
            clock,
            index: 0,
            next: 0,
            end: 0,
        }
    }

    /// The block range of the current line, `None` for a line to skip.
    fn range(&self) -> io::Result<Option<(u64, u64)>> {
        let l = self.line.trim();
        if l.is_empty() || l.starts_with('#') {
            return Ok(None);
        }
        let n = self.n;
        let err = |what: &str| {
            bad(format!(
                "arc line {n}: {what}; expected `START COUNT IGNORED REQUEST`: {l:?}"
            ))
        };
        let mut f = l.split_ascii_whitespace();
        let (Some(start), Some(count)) = (f.next(), f.next()) else {
            return Err(err("fewer than 2 fields"));
        };
        let start: u64 = start
            .parse()
            .map_err(|_| err("start block is not a whole number"))?;
        let count: u64 = count
            .parse()
            .map_err(|_| err("block count is not a whole number"))?;
        let end = start
            .checked_add(count)
            .ok_or_else(|| err("the range passes 2^64"))?;
        Ok(Some((start, end)))
    }
}

impl Iterator for ArcTrace {
    type Item = io::Result<Request>;
    fn next(&mut self) -> Option<Self::Item> {
        while self.next >= self.end {
            match next_line(&mut *self.lines, &mut self.line, &mut self.n) {
                Ok(false) => return None,
                Err(e) => return Some(Err(bad(format!("arc line {}: {e}", self.n + 1)))),
                Ok(true) => match self.range() {
                    Ok(Some((start, end))) => (self.next, self.end) = (start, end),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                },
            }
        }
        let mut r = numeric_read(self.next, ARC_BLOCK, false);
        r.at = self.clock.at(self.index);
        self.next += 1;
        self.index += 1;
        Some(Ok(r))
    }
}

/// Whether `line` is 4 whole numbers apart by spaces, as ARC's lines are.
pub(super) fn is_arc_line(line: &str) -> bool {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    f.len() == 4 && f.iter().all(|s| is_digits(s))
}

/// Whether `line` is 3 numbers apart by spaces, as AdaptSize's are: a
/// time (a fraction allowed), a whole id and a whole size.
pub(super) fn is_adapt_size_line(line: &str) -> bool {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    f.len() == 3
        && f[0].parse::<f64>().is_ok_and(f64::is_finite)
        && f[0].starts_with(|c: char| c.is_ascii_digit())
        && is_digits(f[1])
        && is_digits(f[2])
}

/// LIRS2's CloudPhysics traces (`w106.trace.xz`): a big-endian `u32` key
/// per request; time from the clock.
pub(super) fn lirs2(rec: &[u8; 4], index: u64, clock: &Clock) -> Request {
    let mut r = numeric_read(u64::from(u32::from_be_bytes(*rec)), 1, false);
    r.at = clock.at(index);
    r
}

/// Corda's and Scarab's traces: a big-endian `i64` key per request; time
/// from the clock.
pub(super) fn i64_be(rec: &[u8; 8], index: u64, clock: &Clock) -> Request {
    let mut r = numeric_read(i64::from_be_bytes(*rec) as u64, 1, false);
    r.at = clock.at(index);
    r
}

/// Whether a binary trace's first bytes read as 8-byte keys rather than
/// 4-byte ones. Read as 4-byte words, a trace of 8-byte keys has high
/// halves at even positions and low halves at odd ones, so a word that
/// recurs (keys recur in a cache trace, and the high halves of small keys
/// are all alike) nearly always recurs at a position of the same parity;
/// in a trace of 4-byte keys a key recurs at either parity about as often.
/// 8-byte keys when at least 32 words recur and 90% of them at the same
/// parity (web07 reads 45%, an 8-byte trace 100%).
pub(super) fn looks_like_8_byte_keys(head: &[u8]) -> bool {
    let mut last = std::collections::HashMap::with_capacity(head.len() / 4);
    let (mut same, mut other) = (0usize, 0usize);
    for (i, w) in head.chunks_exact(4).enumerate() {
        if let Some(j) = last.insert(w, i) {
            if (i - j) % 2 == 0 {
                same += 1;
            } else {
                other += 1;
            }
        }
    }
    same + other >= 32 && same * 10 >= (same + other) * 9
}

/// Which caffeine binary format a binary file's name points to, if any:
/// LIRS2's `w<digits>.trace`, cache2k's `web<digits>.trace` and
/// `orm-*.trace`, Corda's `trace_vaultservice*`, Scarab's `*scarab*` and
/// `prods.trace.*` / `recs.trace.*`.
pub(super) fn binary_by_name(name: &str) -> Option<Format> {
    let stem = name.strip_suffix(".trace").unwrap_or(name);
    let numbered = |prefix: &str| stem.strip_prefix(prefix).is_some_and(is_digits);
    if numbered("w") {
        return Some(Format::Lirs2);
    }
    if numbered("web") || (stem.starts_with("orm-") && name.ends_with(".trace")) {
        return Some(Format::Cache2k);
    }
    if name.contains("corda") || name.contains("vaultservice") {
        return Some(Format::Corda);
    }
    if name.contains("scarab") || name.starts_with("prods.trace") || name.starts_with("recs.trace")
    {
        return Some(Format::Scarab);
    }
    None
}

/// A key as text for the text formats that build keys of several fields.
pub(super) fn joined(a: &str, b: &str) -> CompactString {
    let mut k = CompactString::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push(':');
    k.push_str(b);
    k
}
