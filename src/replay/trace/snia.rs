//! Block and photo traces from SNIA's IOTTA repository, as Caffeine's
//! simulator bundles samples of them: MSR Cambridge, SYSTOR '17, Tencent
//! Cloud Block Storage and Tencent photo cache. The field layouts are those
//! of the traces' READMEs (and Caffeine's and libCacheSim's readers); this
//! is an independent implementation.

use std::io;

use compact_str::CompactString;

use super::caffeine::{is_digits, joined, saturate};
use super::{Request, line_error, text_id};

/// Windows FILETIME ticks (100 ns since 1601-01-01) at the Unix epoch.
const FILETIME_UNIX_EPOCH: i128 = 116_444_736_000_000_000;

/// The fields of `l` split by commas, trimmed.
fn fields(l: &str) -> Vec<&str> {
    l.split(',').map(str::trim).collect()
}

fn whole(s: &str) -> Option<u64> {
    if is_digits(s) { s.parse().ok() } else { None }
}

/// A line of an MSR Cambridge trace:
/// `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime`, the
/// timestamp in Windows FILETIME (100 ns ticks since 1601), `Type` `Read`
/// or `Write`, offset and size in bytes. The key is the offset (one file
/// is one disk).
pub(super) fn msr(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let err = line_error(
        n,
        "Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime",
        l,
    );
    let f = fields(l);
    let [ts, _host, _disk, op, offset, size, _response] = f[..] else {
        return Err(err(&format!("{} fields", f.len())));
    };
    let Some(ticks) = whole(ts) else {
        // A header line names the fields.
        if ts.eq_ignore_ascii_case("timestamp") {
            return Ok(None);
        }
        return Err(err("timestamp is not a whole number of 100 ns ticks"));
    };
    let write = if op.eq_ignore_ascii_case("write") {
        true
    } else if op.eq_ignore_ascii_case("read") {
        false
    } else {
        return Err(err("type is not Read or Write"));
    };
    let offset = whole(offset).ok_or_else(|| err("offset is not a whole number"))?;
    let size = whole(size).ok_or_else(|| err("size is not a whole number"))?;
    Ok(Some(Request {
        at: (i128::from(ticks) - FILETIME_UNIX_EPOCH) as f64 / 1e7,
        id: offset,
        key: super::numeric(offset),
        size: saturate(size).max(1),
        ttl: None,
        write,
    }))
}

/// Whether `line` has the shape of an MSR Cambridge line: 7 fields, a
/// whole timestamp, `Read`/`Write` fourth, whole offset and size.
pub(super) fn is_msr_line(line: &str) -> bool {
    let f = fields(line.trim());
    f.len() == 7
        && whole(f[0]).is_some()
        && (f[3].eq_ignore_ascii_case("read") || f[3].eq_ignore_ascii_case("write"))
        && whole(f[4]).is_some()
        && whole(f[5]).is_some()
}

/// The header line of SYSTOR '17 files.
pub(super) const SYSTOR_HEADER: &str = "Timestamp,Response,IOType,LUN,Offset,Size";

/// A line of a SYSTOR '17 trace: `Timestamp,Response,IOType,LUN,Offset,Size`,
/// the timestamp in Unix seconds with a fraction, `IOType` `R`, `W` or blank
/// (read as a read), offset and size in bytes. The key is `LUN:Offset`.
/// Header lines (one starts each hourly file) are skipped wherever they
/// are, so concatenated files read too.
pub(super) fn systor(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') || is_systor_header(l) {
        return Ok(None);
    }
    let err = line_error(n, SYSTOR_HEADER, l);
    let f = fields(l);
    let [ts, _response, op, lun, offset, size] = f[..] else {
        return Err(err(&format!("{} fields", f.len())));
    };
    let at: f64 = ts
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| err("timestamp is not a number"))?;
    let write = match op {
        "W" | "w" => true,
        "R" | "r" | "" => false,
        _ => return Err(err("IOType is not R, W or blank")),
    };
    if whole(lun).is_none() {
        return Err(err("LUN is not a whole number"));
    }
    if whole(offset).is_none() {
        return Err(err("offset is not a whole number"));
    }
    let size = whole(size).ok_or_else(|| err("size is not a whole number"))?;
    let key = joined(lun, offset);
    Ok(Some(Request {
        at,
        id: text_id(&key),
        key,
        size: saturate(size).max(1),
        ttl: None,
        write,
    }))
}

pub(super) fn is_systor_header(l: &str) -> bool {
    l.trim().eq_ignore_ascii_case(SYSTOR_HEADER)
}

/// Whether `line` has the shape of a SYSTOR '17 line: 6 fields, a Unix
/// timestamp with a fraction, `R`/`W`/blank third, whole LUN, offset, size.
pub(super) fn is_systor_line(line: &str) -> bool {
    let f = fields(line.trim());
    f.len() == 6
        && f[0].contains('.')
        && f[0].parse::<f64>().is_ok()
        && matches!(f[2], "R" | "W" | "r" | "w" | "")
        && f[3..].iter().all(|s| whole(s).is_some())
}

/// Bytes of a sector of Tencent's block traces.
pub(super) const SECTOR: u64 = 512;

/// A line of a Tencent Cloud Block Storage trace:
/// `Timestamp,Offset,Size,IOType,VolumeID`, the timestamp in Unix seconds,
/// offset and size in 512-byte sectors, `IOType` 0 (read) or 1 (write).
/// The key is `VolumeID:Offset`; the size is in bytes.
pub(super) fn tencent_block(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let err = line_error(n, "Timestamp,Offset,Size,IOType,VolumeID", l);
    let f = fields(l);
    let [ts, offset, size, op, volume] = f[..] else {
        return Err(err(&format!("{} fields", f.len())));
    };
    let at = whole(ts).ok_or_else(|| err("timestamp is not a whole number of seconds"))?;
    if whole(offset).is_none() {
        return Err(err("offset is not a whole number"));
    }
    let sectors = whole(size).ok_or_else(|| err("size is not a whole number"))?;
    let write = match op {
        "0" => false,
        "1" => true,
        _ => return Err(err("IOType is not 0 (read) or 1 (write)")),
    };
    if whole(volume).is_none() {
        return Err(err("volume id is not a whole number"));
    }
    let key = joined(volume, offset);
    Ok(Some(Request {
        at: at as f64,
        id: text_id(&key),
        key,
        size: saturate(sectors.saturating_mul(SECTOR)).max(1),
        ttl: None,
        write,
    }))
}

/// Whether `line` is 5 whole numbers apart by commas, the fourth 0 or 1.
pub(super) fn is_tencent_block_line(line: &str) -> bool {
    let f = fields(line.trim());
    f.len() == 5 && f.iter().all(|s| whole(s).is_some()) && matches!(f[3], "0" | "1")
}

/// A line of a Tencent photo cache trace, 8 fields apart by spaces:
/// `Timestamp PhotoId Format SizeSpec ReturnSize CacheHit Terminal
/// ResponseTime`, the timestamp as `yyyyMMddHHmmss` (taken as UTC), the
/// photo id in hex. The key is the photo id (as libCacheSim and Caffeine
/// key them), the size the bytes returned; every request is a read.
pub(super) fn tencent_photo(line: &str, n: u64) -> io::Result<Option<Request>> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return Ok(None);
    }
    let err = line_error(
        n,
        "Timestamp PhotoId Format SizeSpec ReturnSize CacheHit Terminal ResponseTime",
        l,
    );
    let f: Vec<&str> = l.split_ascii_whitespace().collect();
    if f.len() != 8 {
        return Err(err(&format!("{} fields", f.len())));
    }
    let at = photo_time(f[0]).ok_or_else(|| err("timestamp is not yyyyMMddHHmmss"))?;
    let id = f[1];
    if !is_hex(id) {
        return Err(err("photo id is not hexadecimal"));
    }
    let size = whole(f[4]).ok_or_else(|| err("return size is not a whole number"))?;
    Ok(Some(Request {
        at,
        id: text_id(id),
        key: CompactString::from(id),
        size: saturate(size).max(1),
        ttl: None,
        write: false,
    }))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `yyyyMMddHHmmss` as Unix seconds (UTC).
fn photo_time(s: &str) -> Option<f64> {
    if s.len() != 14 || !is_digits(s) {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    Some(t.and_utc().timestamp() as f64)
}

/// Whether `line` has the shape of a Tencent photo line: 8 fields apart by
/// spaces, a 14-digit timestamp and a hex photo id of 16 digits or more.
pub(super) fn is_tencent_photo_line(line: &str) -> bool {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    f.len() == 8
        && photo_time(f[0]).is_some()
        && f[1].len() >= 16
        && is_hex(f[1])
        && is_digits(f[4])
}
