//! Decompression of trace files, as streams: gzip (every member of a
//! multi-member file), bzip2 (every stream), xz (on a helper thread) and
//! zstd (frame after frame). The compression is recognised by the file's
//! magic number, whatever its name, so a compressed file without the suffix
//! opens, and so does a decompressed one that kept it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use super::bad;

/// How a trace file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// The suffixes format detection looks through, without the dot.
    pub const SUFFIXES: [(&'static str, Compression); 6] = [
        ("gz", Compression::Gzip),
        ("gzip", Compression::Gzip),
        ("bz2", Compression::Bzip2),
        ("xz", Compression::Xz),
        ("zst", Compression::Zstd),
        ("zstd", Compression::Zstd),
    ];

    /// The compression whose magic number `head` (the file's first bytes)
    /// starts with, if any.
    pub fn from_magic(head: &[u8]) -> Option<Compression> {
        match head {
            // gzip: ID1 ID2 and CM = 8 (deflate, the only method defined).
            [0x1f, 0x8b, 0x08, ..] => Some(Compression::Gzip),
            // bzip2: "BZh" and the block size, '1'..='9'.
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some(Compression::Bzip2),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
            // zstd: a frame (28 b5 2f fd) or a skippable frame (pzstd's first).
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
            [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// What `head`'s magic number says. The suffix is not trusted: a
    /// `.gz` file that is not gzip (decompressed, and not renamed) reads as
    /// it is.
    pub fn of(head: &[u8]) -> Compression {
        Compression::from_magic(head).unwrap_or(Compression::None)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// `name` without one compression suffix (`.gz`, `.bz2`, `.xz`, `.zst`, …).
pub fn strip_suffix(name: &str) -> &str {
    Compression::SUFFIXES
        .iter()
        .find_map(|(s, _)| name.strip_suffix(s)?.strip_suffix('.'))
        .unwrap_or(name)
}

const CHUNK: usize = 1 << 16;

/// The file as a decompressed byte stream.
pub fn open_bytes(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::with_capacity(CHUNK, File::open(path)?);
    let compression = Compression::of(file.fill_buf()?);
    decompress(file, compression)
}

/// `input` decompressed as `compression` says.
pub fn decompress<R: BufRead + Send + 'static>(
    input: R,
    compression: Compression,
) -> io::Result<Box<dyn BufRead + Send>> {
    let labelled = |r: Box<dyn Read + Send>| -> Box<dyn BufRead + Send> {
        Box::new(BufReader::with_capacity(
            CHUNK,
            Labelled {
                label: compression.name(),
                inner: r,
            },
        ))
    };
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => labelled(Box::new(flate2::bufread::MultiGzDecoder::new(input))),
        Compression::Bzip2 => labelled(Box::new(bzip2::bufread::MultiBzDecoder::new(input))),
        Compression::Zstd => labelled(Box::new(ZstdFrames::new(Box::new(input))?)),
        Compression::Xz => Box::new(BufReader::new(xz_on_a_thread(input))),
    })
}

/// A decoder whose errors name the compression (`gzip: corrupt deflate
/// stream`), so a bad file says what was wrong with it.
struct Labelled {
    label: &'static str,
    inner: Box<dyn Read + Send>,
}

impl Read for Labelled {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out).map_err(|e| match e.kind() {
            io::ErrorKind::Interrupted => e,
            _ if e.to_string().starts_with(self.label) => e,
            // A truncated file ends in the middle of a compressed block.
            io::ErrorKind::UnexpectedEof => bad(format!("{}: truncated: {e}", self.label)),
            kind => io::Error::new(kind, format!("{}: {e}", self.label)),
        })
    }
}

/// xz-decompresses `input` on a helper thread that hands 64 KiB chunks over
/// a bounded channel.
fn xz_on_a_thread<R: BufRead + Send + 'static>(mut input: R) -> ChunkReader {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        let mut out = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = lzma_rs::xz_decompress(&mut input, &mut out);
        let _ = io::Write::flush(&mut out);
        if let Err(e) = r {
            let _ = tx.send(Err(bad(format!("xz: {e}"))));
        }
    });
    ChunkReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    }
}

type Source = Box<dyn BufRead + Send>;

/// A zstd stream decoded frame after frame: `ruzstd`'s decoder reads one
/// frame, and `zstd` may write several (multi-threaded or concatenated);
/// skippable frames (`pzstd` writes them) are skipped.
struct ZstdFrames {
    frame: Option<StreamingDecoder<Source, FrameDecoder>>,
}

fn zstd_error(e: impl std::fmt::Display) -> io::Error {
    bad(format!("zstd: {e}"))
}

/// Magic numbers 0x184D2A50..=0x184D2A5F start a skippable frame.
const ZSTD_SKIPPABLE: u32 = 0x184D_2A50;

/// The decoder of the next data frame of `source`, `None` at its end.
fn next_zstd_frame(
    mut source: Source,
) -> io::Result<Option<StreamingDecoder<Source, FrameDecoder>>> {
    loop {
        let buf = source.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        if buf.len() >= 4
            && u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) & !0xF == ZSTD_SKIPPABLE
        {
            let mut head = [0u8; 8];
            source.read_exact(&mut head)?;
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            io::copy(&mut (&mut source).take(u64::from(len)), &mut io::sink())?;
            continue;
        }
        return StreamingDecoder::new(source).map(Some).map_err(zstd_error);
    }
}

impl ZstdFrames {
    fn new(source: Source) -> io::Result<Self> {
        Ok(ZstdFrames {
            frame: next_zstd_frame(source)?,
        })
    }
}

impl Read for ZstdFrames {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while let Some(frame) = self.frame.as_mut() {
            let n = frame.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            // This frame is done: decode the next one, if any bytes are left.
            match self.frame.take().map(StreamingDecoder::into_inner) {
                Some(source) => self.frame = next_zstd_frame(source)?,
                None => break,
            }
        }
        Ok(0)
    }
}

/// Sends what is written in chunks over a bounded channel.
struct ChunkWriter {
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"))
    }
}

/// Reads the chunks a [`ChunkWriter`] sends.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
