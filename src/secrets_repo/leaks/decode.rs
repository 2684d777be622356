//! The decoding pipeline: finds regions of a layer that are an everyday
//! encoding of something else (base64, hex, percent-encoding, escapes,
//! UTF-16, gzip/zlib, zip and tar archives, strings split across lines) and
//! returns what they decode to, within size, ratio and count limits.
//!
//! Decoders never fail loudly: input that does not decode is simply not a
//! region. Input that would decode beyond a limit is reported as
//! [`Outcome::Limit`] so that the caller can turn a bomb into a finding.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::Regex;
use std::io::Read;
use std::sync::LazyLock;

/// One decoding step, as shown in a finding's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Base64,
    Hex,
    Percent,
    Unescape,
    Utf16le,
    Utf16be,
    Gzip,
    Zlib,
    /// An OpenPGP compressed data packet (`gpg --store`, signed-only messages).
    Openpgp,
    Zip,
    Tar,
    /// Strings split across lines, concatenated, or folded (YAML `>-`), joined.
    Join,
}

impl Layer {
    /// Returns the layer's name as shown in chains (`base64>gzip`).
    pub fn name(self) -> &'static str {
        match self {
            Layer::Base64 => "base64",
            Layer::Hex => "hex",
            Layer::Percent => "percent",
            Layer::Unescape => "unescape",
            Layer::Utf16le => "utf16le",
            Layer::Utf16be => "utf16be",
            Layer::Gzip => "gzip",
            Layer::Zlib => "zlib",
            Layer::Openpgp => "openpgp",
            Layer::Zip => "zip",
            Layer::Tar => "tar",
            Layer::Join => "join",
        }
    }

    /// Returns true for layers that decompress or unpack (bombs live there).
    pub fn is_container(self) -> bool {
        matches!(
            self,
            Layer::Gzip | Layer::Zlib | Layer::Openpgp | Layer::Zip | Layer::Tar
        )
    }
}

/// Bounds on the work one blob may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many decodings deep a region is followed.
    pub max_depth: usize,
    /// The largest single decoded layer, in bytes.
    pub max_layer: usize,
    /// The total bytes all decodings of one blob may produce.
    pub max_total: usize,
    /// The largest expansion ratio of a decompression (beyond `ratio_floor`).
    pub max_ratio: usize,
    /// Decompressed output up to this size is allowed whatever the ratio.
    pub ratio_floor: usize,
    /// The most entries read from one archive.
    pub max_entries: usize,
    /// The most regions decoded in one layer.
    pub max_regions: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 4,
            max_layer: 8 << 20,
            max_total: 32 << 20,
            max_ratio: 100,
            ratio_floor: 1 << 20,
            max_entries: 1000,
            max_regions: 4096,
        }
    }
}

/// The decoding work left for one blob.
#[derive(Debug, Clone)]
pub struct Budget {
    remaining: usize,
}

impl Budget {
    /// Returns a budget of `limits.max_total` bytes.
    pub fn new(limits: &Limits) -> Budget {
        Budget {
            remaining: limits.max_total,
        }
    }

    /// Returns the bytes left.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    fn take(&mut self, n: usize) -> bool {
        if n > self.remaining {
            self.remaining = 0;
            false
        } else {
            self.remaining -= n;
            true
        }
    }
}

/// What a region decoded to.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub layer: Layer,
    /// Where the region starts in the parent layer.
    pub offset: usize,
    /// The archive entry's name, for zip and tar.
    pub entry: Option<Vec<u8>>,
    pub bytes: Vec<u8>,
}

/// One result of decoding a layer.
#[derive(Debug, Clone)]
pub enum Outcome {
    Decoded(Decoded),
    /// A region that would decode beyond a limit (a bomb, or too many entries).
    Limit {
        layer: Layer,
        offset: usize,
        what: String,
    },
}

/// Returns every decoding of `bytes`: whole-layer decodings (UTF-16,
/// compression, archives) and region decodings (base64, hex, percent,
/// escapes, joined strings), each within `limits` and `budget`.
pub fn decode_all(bytes: &[u8], limits: &Limits, budget: &mut Budget) -> Vec<Outcome> {
    let mut out = Vec::new();
    if let Some(o) = whole(bytes, limits, budget, &mut out) {
        // A container is one thing; its regions are not text.
        return o;
    }
    let mut regions = 0usize;
    let mut push = |layer: Layer, offset: usize, decoded: Vec<u8>, out: &mut Vec<Outcome>, budget: &mut Budget| {
        if regions >= limits.max_regions {
            return;
        }
        regions += 1;
        if decoded.len() > limits.max_layer || !budget.take(decoded.len()) {
            out.push(Outcome::Limit {
                layer,
                offset,
                what: format!("{} bytes decoded exceeds the budget", decoded.len()),
            });
            return;
        }
        out.push(Outcome::Decoded(Decoded {
            layer,
            offset,
            entry: None,
            bytes: decoded,
        }));
    };
    for (offset, decoded) in base64_regions(bytes) {
        push(Layer::Base64, offset, decoded, &mut out, budget);
    }
    for (offset, decoded) in hex_regions(bytes) {
        push(Layer::Hex, offset, decoded, &mut out, budget);
    }
    for (offset, decoded) in percent_regions(bytes) {
        push(Layer::Percent, offset, decoded, &mut out, budget);
    }
    for (offset, decoded) in unescape_regions(bytes) {
        push(Layer::Unescape, offset, decoded, &mut out, budget);
    }
    if let Some(joined) = join_split(bytes) {
        push(Layer::Join, 0, joined, &mut out, budget);
    }
    out
}

/// Decodes a whole layer that is UTF-16, compressed, or an archive; returns
/// None when it is none of those.
fn whole(bytes: &[u8], limits: &Limits, budget: &mut Budget, out: &mut Vec<Outcome>) -> Option<Vec<Outcome>> {
    fn single(layer: Layer, result: Result<Vec<u8>, String>, budget: &mut Budget) -> Option<Vec<Outcome>> {
        Some(vec![match result {
            Ok(decoded) if budget.take(decoded.len()) => Outcome::Decoded(Decoded {
                layer,
                offset: 0,
                entry: None,
                bytes: decoded,
            }),
            Ok(decoded) => Outcome::Limit {
                layer,
                offset: 0,
                what: format!("{} bytes decoded exceeds the budget", decoded.len()),
            },
            Err(what) => Outcome::Limit { layer, offset: 0, what },
        }])
    }
    if let Some(layer) = utf16_kind(bytes) {
        let decoded = decode_utf16(bytes, layer == Layer::Utf16le);
        return single(layer, Ok(decoded), budget);
    }
    let cap = decompress_cap(bytes.len(), limits, budget);
    if bytes.len() >= 10 && bytes[0] == 0x1f && bytes[1] == 0x8b && bytes[2] == 8 {
        let reader = flate2::read::MultiGzDecoder::new(bytes);
        return match bounded_read(reader, cap) {
            Some(r) => single(Layer::Gzip, r, budget),
            None => None,
        };
    }
    if bytes.len() >= 6 && bytes[0] == 0x78 && (u16::from(bytes[0]) << 8 | u16::from(bytes[1])) % 31 == 0 {
        let reader = flate2::read::ZlibDecoder::new(bytes);
        if let Some(r) = bounded_read(reader, cap) {
            return single(Layer::Zlib, r, budget);
        }
    }
    if let Some((algorithm, body)) = openpgp_compressed(bytes) {
        let result = match algorithm {
            1 => bounded_read(flate2::read::DeflateDecoder::new(body), cap),
            _ => bounded_read(flate2::read::ZlibDecoder::new(body), cap),
        };
        if let Some(r) = result {
            return single(Layer::Openpgp, r, budget);
        }
    }
    if bytes.starts_with(b"PK\x03\x04") {
        unzip(bytes, limits, budget, out);
        return Some(std::mem::take(out));
    }
    if bytes.len() >= 512 && &bytes[257..262] == b"ustar" {
        untar(bytes, limits, budget, out);
        return Some(std::mem::take(out));
    }
    None
}

/// Returns the container layer (`gzip`, `zlib`, `zip`, `tar`) that `bytes`
/// starts as, if any.
pub fn container_kind(bytes: &[u8]) -> Option<Layer> {
    if bytes.len() >= 3 && bytes[0] == 0x1f && bytes[1] == 0x8b && bytes[2] == 8 {
        Some(Layer::Gzip)
    } else if bytes.len() >= 2 && bytes[0] == 0x78 && (u16::from(bytes[0]) << 8 | u16::from(bytes[1])) % 31 == 0 {
        Some(Layer::Zlib)
    } else if openpgp_compressed(bytes).is_some() {
        Some(Layer::Openpgp)
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some(Layer::Zip)
    } else if bytes.len() >= 512 && &bytes[257..262] == b"ustar" {
        Some(Layer::Tar)
    } else {
        None
    }
}

/// Returns the algorithm (1 ZIP, 2 ZLIB) and compressed body of an OpenPGP
/// compressed data packet (tag 8) that `bytes` starts with. Partial body
/// lengths are not followed; the body then reads as far as it is contiguous.
pub fn openpgp_compressed(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let first = *bytes.first()?;
    let header = if first & 0xc0 == 0xc0 {
        // New format: tag in the low six bits, then a length.
        if first & 0x3f != 8 {
            return None;
        }
        match *bytes.get(1)? {
            0..=191 => 2,
            192..=223 => 3,
            255 => 6,
            _ => 2,
        }
    } else if first & 0xc0 == 0x80 {
        // Old format: tag in bits 2..6, length type in the low two bits.
        if (first >> 2) & 0x0f != 8 {
            return None;
        }
        match first & 3 {
            0 => 2,
            1 => 3,
            2 => 5,
            _ => 1,
        }
    } else {
        return None;
    };
    let algorithm = *bytes.get(header)?;
    let body = bytes.get(header + 1..)?;
    (matches!(algorithm, 1 | 2) && body.len() >= 2).then_some((algorithm, body))
}

/// The most a decompression of `input_len` bytes may produce.
fn decompress_cap(input_len: usize, limits: &Limits, budget: &Budget) -> usize {
    let by_ratio = input_len.saturating_mul(limits.max_ratio).max(limits.ratio_floor);
    by_ratio.min(limits.max_layer).min(budget.remaining())
}

/// Reads at most `cap` bytes: Ok(bytes) when the stream ends within the cap,
/// Err when it goes beyond (a bomb), None when it is not valid at all.
fn bounded_read<R: Read>(reader: R, cap: usize) -> Option<Result<Vec<u8>, String>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    match reader.take(limit).read_to_end(&mut buf) {
        Ok(_) if buf.len() > cap => Some(Err(format!("decompresses beyond {cap} bytes"))),
        Ok(_) => Some(Ok(buf)),
        // A truncated stream still yields what it had: scan that.
        Err(_) if !buf.is_empty() => Some(Ok(buf)),
        Err(_) => None,
    }
}

fn unzip(bytes: &[u8], limits: &Limits, budget: &mut Budget, out: &mut Vec<Outcome>) {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return;
    };
    if archive.len() > limits.max_entries {
        out.push(Outcome::Limit {
            layer: Layer::Zip,
            offset: 0,
            what: format!("{} entries, more than {}", archive.len(), limits.max_entries),
        });
    }
    for i in 0..archive.len().min(limits.max_entries) {
        let Ok(file) = archive.by_index(i) else { continue };
        if file.is_dir() {
            continue;
        }
        let name = file.name_raw().to_vec();
        let cap = decompress_cap(
            usize::try_from(file.compressed_size()).unwrap_or(usize::MAX),
            limits,
            budget,
        );
        match bounded_read(file, cap) {
            Some(Ok(decoded)) if budget.take(decoded.len()) => out.push(Outcome::Decoded(Decoded {
                layer: Layer::Zip,
                offset: 0,
                entry: Some(name),
                bytes: decoded,
            })),
            Some(Ok(_)) | Some(Err(_)) => out.push(Outcome::Limit {
                layer: Layer::Zip,
                offset: 0,
                what: format!(
                    "entry {} decompresses beyond {cap} bytes",
                    String::from_utf8_lossy(&name)
                ),
            }),
            None => {}
        }
    }
}

fn untar(bytes: &[u8], limits: &Limits, budget: &mut Budget, out: &mut Vec<Outcome>) {
    let mut archive = tar::Archive::new(bytes);
    let Ok(entries) = archive.entries() else { return };
    for (i, entry) in entries.enumerate() {
        if i >= limits.max_entries {
            out.push(Outcome::Limit {
                layer: Layer::Tar,
                offset: 0,
                what: format!("more than {} entries", limits.max_entries),
            });
            break;
        }
        let Ok(entry) = entry else { break };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path_bytes().into_owned();
        let cap = limits.max_layer.min(budget.remaining());
        match bounded_read(entry, cap) {
            Some(Ok(decoded)) if budget.take(decoded.len()) => out.push(Outcome::Decoded(Decoded {
                layer: Layer::Tar,
                offset: 0,
                entry: Some(name),
                bytes: decoded,
            })),
            Some(Ok(_)) | Some(Err(_)) => out.push(Outcome::Limit {
                layer: Layer::Tar,
                offset: 0,
                what: format!("entry {} is larger than {cap} bytes", String::from_utf8_lossy(&name)),
            }),
            None => {}
        }
    }
}

/// Returns the UTF-16 byte order of `bytes`: by BOM, or by the pattern of
/// zero bytes that ASCII text in UTF-16 has.
fn utf16_kind(bytes: &[u8]) -> Option<Layer> {
    if bytes.len() < 4 {
        return None;
    }
    match (bytes[0], bytes[1]) {
        (0xff, 0xfe) => return Some(Layer::Utf16le),
        (0xfe, 0xff) => return Some(Layer::Utf16be),
        _ => {}
    }
    if bytes.len() < 16 {
        return None;
    }
    let sample = &bytes[..bytes.len().min(1024) & !1];
    let pairs = sample.len() / 2;
    let (mut le, mut be) = (0usize, 0usize);
    for p in sample.chunks_exact(2) {
        if p[1] == 0 && p[0] != 0 && p[0].is_ascii() {
            le += 1;
        } else if p[0] == 0 && p[1] != 0 && p[1].is_ascii() {
            be += 1;
        }
    }
    if le * 10 >= pairs * 9 {
        Some(Layer::Utf16le)
    } else if be * 10 >= pairs * 9 {
        Some(Layer::Utf16be)
    } else {
        None
    }
}

fn decode_utf16(bytes: &[u8], little: bool) -> Vec<u8> {
    let mut units = bytes.chunks_exact(2).map(|p| {
        if little {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    let mut first = true;
    let mut text = String::with_capacity(bytes.len() / 2);
    for c in char::decode_utf16(&mut units) {
        let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
        if first && c == '\u{feff}' {
            first = false;
            continue;
        }
        first = false;
        text.push(c);
    }
    text.into_bytes()
}

/// Returns true when decoded bytes are worth scanning: text, or something
/// another decoder recognises. Random bytes (a key's own base64 alphabet
/// decoding to noise, a git SHA in hex) are not.
fn interesting(bytes: &[u8]) -> bool {
    if bytes.len() < 6 {
        return false;
    }
    if bytes.starts_with(&[0x1f, 0x8b])
        || bytes.starts_with(b"PK\x03\x04")
        || bytes.starts_with(&[0xff, 0xfe])
        || bytes.starts_with(&[0xfe, 0xff])
        || (bytes[0] == 0x78 && (u16::from(bytes[0]) << 8 | u16::from(bytes[1])) % 31 == 0)
        || (bytes.len() >= 512 && &bytes[257..262] == b"ustar")
        || openpgp_compressed(bytes).is_some()
    {
        return true;
    }
    let sample = &bytes[..bytes.len().min(4096)];
    let text = sample
        .iter()
        .filter(|&&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
        .count();
    let high = sample.iter().filter(|&&b| b >= 0x80).count();
    text * 100 >= sample.len() * 95 && (high * 100 <= sample.len() * 10 || std::str::from_utf8(sample).is_ok())
        || utf16_kind(bytes).is_some()
}

static B64_TOKEN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_-]{16,}={0,2}").expect("valid regex"));
static HEX_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^0-9A-Za-z])((?:[0-9a-fA-F]{2}){8,})").expect("valid regex"));
static PERCENT_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"[^\s"'<>]*%[0-9A-Fa-f]{2}[^\s"'<>]*"#).expect("valid regex"));

const ENGINE_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
const ENGINE_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 in either alphabet, padded or not, ignoring whitespace.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if body.len() % 4 == 1 || body.is_empty() {
        return None;
    }
    let url = body.iter().any(|&b| b == b'-' || b == b'_');
    let engine = if url { &ENGINE_URL } else { &ENGINE_STD };
    engine.decode(body).ok()
}

fn is_b64_line(line: &[u8]) -> bool {
    !line.is_empty()
        && line
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-' | b'='))
}

fn is_hex_line(line: &[u8]) -> bool {
    line.len() >= 2 && line.len().is_multiple_of(2) && line.iter().all(u8::is_ascii_hexdigit)
}

/// Lines of `bytes` with their start offsets and trimmed contents.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut offset = 0usize;
    bytes.split(|&b| b == b'\n').map(move |line| {
        let start = offset;
        offset += line.len() + 1;
        (start, line.trim_ascii())
    })
}

/// Runs of two or more consecutive lines that are wholly in an alphabet
/// (wrapped base64 or `xxd -p` hex), skipping PEM armor and header lines.
fn wrapped_blocks(bytes: &[u8], is_line: fn(&[u8]) -> bool) -> Vec<(usize, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<u8>, usize)> = None;
    let mut flush = |current: &mut Option<(usize, Vec<u8>, usize)>| {
        if let Some((start, joined, n)) = current.take()
            && n >= 2
        {
            blocks.push((start, joined));
        }
    };
    for (start, line) in lines(bytes) {
        // PEM/OpenPGP armor and header lines are not in the alphabet and end
        // (or precede) a block; an armor checksum (`=abcd`) is not body.
        if is_line(line) && !(line.starts_with(b"=") && line.len() == 5) {
            match &mut current {
                Some((_, joined, n)) => {
                    joined.extend_from_slice(line);
                    *n += 1;
                }
                None => current = Some((start, line.to_vec(), 1)),
            }
        } else {
            flush(&mut current);
        }
    }
    flush(&mut current);
    blocks
}

/// Base64 regions: single tokens, and wrapped blocks of lines.
pub fn base64_regions(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for m in B64_TOKEN.find_iter(bytes) {
        if let Some(d) = base64_decode(m.as_bytes()).filter(|d| interesting(d)) {
            out.push((m.start(), d));
        }
    }
    for (start, joined) in wrapped_blocks(bytes, is_b64_line) {
        if joined.len() < 16 {
            continue;
        }
        if let Some(d) = base64_decode(&joined).filter(|d| interesting(d)) {
            out.push((start, d));
        }
    }
    out
}

/// Hex regions: single tokens and `xxd -p` blocks.
pub fn hex_regions(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for c in HEX_TOKEN.captures_iter(bytes) {
        let Some(m) = c.get(1) else { continue };
        if let Some(d) = hex::decode(m.as_bytes()).ok().filter(|d| interesting(d)) {
            out.push((m.start(), d));
        }
    }
    for (start, joined) in wrapped_blocks(bytes, is_hex_line) {
        if let Some(d) = hex::decode(&joined).ok().filter(|d| interesting(d)) {
            out.push((start, d));
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encoded regions (`%2B`, `%3D`), decoded.
pub fn percent_regions(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for m in PERCENT_TOKEN.find_iter(bytes) {
        let s = m.as_bytes();
        let mut d = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'%'
                && i + 2 < s.len()
                && let (Some(h), Some(l)) = (hex_val(s[i + 1]), hex_val(s[i + 2]))
            {
                d.push(h << 4 | l);
                i += 3;
            } else {
                d.push(s[i]);
                i += 1;
            }
        }
        if d != s && d.len() >= 6 {
            out.push((m.start(), d));
        }
    }
    out
}

/// Lines with JSON/C escapes (`\u0041`, `\x41`, `\"`, `\n`), unescaped.
pub fn unescape_regions(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    for line in bytes.split(|&b| b == b'\n') {
        let start = offset;
        offset += line.len() + 1;
        if !line
            .windows(2)
            .any(|w| w[0] == b'\\' && matches!(w[1], b'u' | b'x' | b'U'))
        {
            continue;
        }
        let mut d: Vec<u8> = Vec::with_capacity(line.len());
        let mut i = 0;
        let mut pending_high: Option<u32> = None;
        while i < line.len() {
            if line[i] != b'\\' || i + 1 >= line.len() {
                d.push(line[i]);
                i += 1;
                continue;
            }
            let hexn = |from: usize, n: usize| -> Option<u32> {
                let s = line.get(from..from + n)?;
                s.iter()
                    .try_fold(0u32, |acc, &b| Some(acc << 4 | u32::from(hex_val(b)?)))
            };
            match line[i + 1] {
                b'u' if hexn(i + 2, 4).is_some() => {
                    let v = hexn(i + 2, 4).unwrap_or(0xfffd);
                    i += 6;
                    if (0xd800..0xdc00).contains(&v) {
                        pending_high = Some(v);
                        continue;
                    }
                    let c = match pending_high.take() {
                        Some(h) if (0xdc00..0xe000).contains(&v) => {
                            char::from_u32(0x10000 + ((h - 0xd800) << 10) + (v - 0xdc00))
                        }
                        _ => char::from_u32(v),
                    };
                    let mut buf = [0u8; 4];
                    d.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
                }
                b'x' if hexn(i + 2, 2).is_some() => {
                    d.push(u8::try_from(hexn(i + 2, 2).unwrap_or(0)).unwrap_or(0));
                    i += 4;
                }
                b'n' => {
                    d.push(b'\n');
                    i += 2;
                }
                b't' => {
                    d.push(b'\t');
                    i += 2;
                }
                b'r' => {
                    d.push(b'\r');
                    i += 2;
                }
                c @ (b'"' | b'\\' | b'/' | b'\'') => {
                    d.push(c);
                    i += 2;
                }
                _ => {
                    d.push(line[i]);
                    i += 1;
                }
            }
        }
        if d != line {
            out.push((start, d));
        }
    }
    out
}

static CONCAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"["']\s*(?:\+|\.|\|\||&)?\s*\\?\r?\n?\s*(?:\+|\.|&)?\s*["']|\\\r?\n[ \t]*"#).expect("valid regex")
});

/// Joins strings split across lines: concatenated literals (`"ab" + "cd"`),
/// backslash-newline continuations, and YAML block scalars (`key: >-`
/// followed by indented lines) whose lines are joined without separators.
pub fn join_split(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut changed = false;
    let concat = CONCAT.replace_all(bytes, &b""[..]);
    if concat.as_ref() != bytes {
        changed = true;
    }
    let text = concat.as_ref();
    let mut out = Vec::with_capacity(text.len());
    let all: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let mut i = 0;
    while i < all.len() {
        let line = all[i];
        let trimmed = line.trim_ascii_end();
        const MARKERS: [&[u8]; 6] = [b": >-", b": >", b": |", b": |-", b": >+", b": |+"];
        let block = MARKERS.iter().find(|s| trimmed.ends_with(s));
        if let Some(marker) = block {
            let indent = line.iter().take_while(|&&b| b == b' ').count();
            let mut j = i + 1;
            let mut joined = Vec::new();
            while j < all.len() {
                let next = all[j];
                let next_indent = next.iter().take_while(|&&b| b == b' ').count();
                if next.trim_ascii().is_empty() || next_indent <= indent {
                    break;
                }
                joined.extend_from_slice(next.trim_ascii());
                j += 1;
            }
            if j > i + 2 {
                out.extend_from_slice(&trimmed[..trimmed.len() - marker.len()]);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&joined);
                out.push(b'\n');
                changed = true;
                i = j;
                continue;
            }
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        i += 1;
    }
    out.pop();
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use std::io::Write;

    fn decoded(bytes: &[u8]) -> Vec<(Layer, Vec<u8>)> {
        let limits = Limits::default();
        decode_all(bytes, &limits, &mut Budget::new(&limits))
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Decoded(d) => Some((d.layer, d.bytes)),
                Outcome::Limit { .. } => None,
            })
            .collect()
    }

    fn has(bytes: &[u8], layer: Layer, needle: &[u8]) -> bool {
        decoded(bytes)
            .iter()
            .any(|(l, b)| *l == layer && memchr::memmem::find(b, needle).is_some())
    }

    const TEXT: &[u8] = b"machine example.com login me password s3cr3t-value-for-tests";

    #[test]
    fn base64_all_forms() {
        let std = STANDARD.encode(TEXT);
        assert!(has(std.as_bytes(), Layer::Base64, TEXT));
        let url = URL_SAFE_NO_PAD.encode(TEXT);
        assert!(has(format!("x={url}").as_bytes(), Layer::Base64, TEXT));
        let long = STANDARD.encode(TEXT.repeat(4));
        for width in [64, 76, 13] {
            let wrapped: Vec<String> = long
                .as_bytes()
                .chunks(width)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let armored = format!("-----BEGIN NOTE-----\n{}\n-----END NOTE-----\n", wrapped.join("\n"));
            assert!(has(armored.as_bytes(), Layer::Base64, &TEXT.repeat(4)), "width {width}");
        }
    }

    #[test]
    fn hex_percent_escapes() {
        let hexed = hex::encode(TEXT);
        let xxd: Vec<&str> = hexed
            .as_bytes()
            .chunks(60)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert!(has(xxd.join("\n").as_bytes(), Layer::Hex, TEXT));
        assert!(has(b"u=a%2Bb%3Dc%2Fdef", Layer::Percent, b"a+b=c/def"));
        assert!(has(br#"{"k":"\u0070\u0061ss\"word"}"#, Layer::Unescape, b"pass\"word"));
    }

    #[test]
    fn utf16_compression_and_archives() {
        let mut le = vec![0xff, 0xfe];
        for u in "api_key: abc".encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
        }
        assert!(has(&le, Layer::Utf16le, b"api_key: abc"));
        let be: Vec<u8> = "no bom here, big endian"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert!(has(&be, Layer::Utf16be, b"big endian"));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        assert!(has(&gz, Layer::Gzip, TEXT));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(TEXT).unwrap();
        assert!(has(&z.finish().unwrap(), Layer::Zlib, TEXT));

        let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zw.start_file("notes/a.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        zw.write_all(TEXT).unwrap();
        let zipped = zw.finish().unwrap().into_inner();
        assert!(has(&zipped, Layer::Zip, TEXT));

        let mut tw = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(TEXT.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tw.append_data(&mut h, "dir/t.txt", TEXT).unwrap();
        let tarred = tw.into_inner().unwrap();
        assert!(has(&tarred, Layer::Tar, TEXT));
    }

    #[test]
    fn a_bomb_is_a_limit_not_an_outage() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; 4 << 20]).unwrap();
        let gz = gz.finish().unwrap();
        let limits = Limits {
            ratio_floor: 1 << 16,
            ..Limits::default()
        };
        let out = decode_all(&gz, &limits, &mut Budget::new(&limits));
        assert!(
            matches!(out.as_slice(), [Outcome::Limit { layer: Layer::Gzip, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn joins_split_strings() {
        let j = join_split(b"key = \"abcd\" +\n  \"efgh\"\n").unwrap();
        assert_eq!(j, b"key = \"abcdefgh\"\n");
        let j = join_split(b"a:\n  apikey: >-\n    abcd\n    efgh\nb: 1").unwrap();
        assert_eq!(j, b"a:\n  apikey: abcdefgh\nb: 1");
        assert!(join_split(b"plain text\nnothing split").is_none());
    }

    #[test]
    fn noise_is_not_decoded() {
        // A git SHA, a key-shaped token and rekey's own names decode to noise.
        assert!(decoded(b"SECRETS_REPO_SHA=0123456789abcdef0123456789abcdef01234567").is_empty());
        assert!(decoded(b"JP_REGISTRY_PULL_SECRET_64 Xy7_Qz3-Lm9pR2tWv8Kd4sFh6Jb1Nc5Ge0Ua3Yo7Ti2").is_empty());
    }

    mod properties {
        use super::super::*;
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use proptest::prelude::*;

        const SMALL: Limits = Limits {
            max_depth: 3,
            max_layer: 4096,
            max_total: 16384,
            max_ratio: 10,
            ratio_floor: 1024,
            max_entries: 8,
            max_regions: 64,
        };

        fn check_bounds(bytes: &[u8]) {
            let mut budget = Budget::new(&SMALL);
            let out = decode_all(bytes, &SMALL, &mut budget);
            let total: usize = out
                .iter()
                .map(|o| match o {
                    Outcome::Decoded(d) => {
                        assert!(d.bytes.len() <= SMALL.max_layer, "{} > max_layer", d.bytes.len());
                        d.bytes.len()
                    }
                    Outcome::Limit { .. } => 0,
                })
                .sum();
            assert!(total <= SMALL.max_total, "{total} > max_total");
            assert!(out.len() <= SMALL.max_regions + SMALL.max_entries + 1);
        }

        fn prefixed() -> impl Strategy<Value = Vec<u8>> {
            let prefixes: Vec<Vec<u8>> = vec![
                vec![],
                vec![0x1f, 0x8b, 8],
                vec![0x78, 0x9c],
                b"PK\x03\x04".to_vec(),
                vec![0xff, 0xfe],
                vec![0xfe, 0xff],
                b"-----BEGIN PRIVATE KEY-----\n".to_vec(),
                b"%41%42\\u0041 ".to_vec(),
            ];
            (
                proptest::sample::select(prefixes),
                proptest::collection::vec(any::<u8>(), 0..2048),
            )
                .prop_map(|(mut p, rest)| {
                    p.extend(rest);
                    p
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_input_never_panics_and_stays_within_limits(bytes in prefixed()) {
                check_bounds(&bytes);
            }

            #[test]
            fn arbitrary_text_never_panics(text in "[ -~\n]{0,600}") {
                check_bounds(text.as_bytes());
                let _ = join_split(text.as_bytes());
            }

            #[test]
            fn the_engine_never_panics_on_arbitrary_bytes(bytes in prefixed()) {
                let scanner = crate::secrets_repo::leaks::Scanner::default().with_limits(SMALL);
                let _ = scanner.scan("p", &bytes);
            }

            #[test]
            fn wrapped_base64_round_trips(text in "[a-z0-9 :=]{24,300}", width in 4usize..120) {
                let encoded = STANDARD.encode(text.as_bytes());
                let wrapped: Vec<&[u8]> = encoded.as_bytes().chunks(width.max(4)).collect();
                let wrapped = wrapped.join(&b"\n"[..]);
                let found = base64_regions(&wrapped)
                    .into_iter()
                    .any(|(_, d)| d == text.as_bytes());
                prop_assert!(found);
            }
        }
    }
}
