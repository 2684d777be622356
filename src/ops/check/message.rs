//! Key-less validation of an encrypted file's whole message structure.
//!
//! Exists because reading only the session-key packets (as
//! `pgp::addressed_key_ids` does) says nothing about the rest: a message cut
//! short or with bytes after its end would pass as "addressed to exactly the
//! recipient policy". This reads the framing of every packet to the last
//! byte, without any key and without sequoia, so no input can panic here.
//!
//! Seam: when `secrets_repo::pgp` offers a `validate_message`, call it from
//! [`validate_message`] (keep this framing check in front of it or drop it).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The most packets a message may hold (session keys plus the data).
const MAX_PACKETS: usize = 1024;

const BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
const END: &str = "-----END PGP MESSAGE-----";

/// Checks that `bytes` is one complete, well-formed encrypted OpenPGP
/// message (armored or binary): public- or symmetric-key session key
/// packets, then exactly one integrity-protected encrypted data packet,
/// every packet's body complete, nothing after it. Says why not.
pub fn validate_message(bytes: &[u8]) -> Result<(), String> {
    let binary = if bytes.trim_ascii_start().starts_with(BEGIN.as_bytes()) {
        dearmor(bytes)?
    } else {
        bytes.to_vec()
    };
    let packets = packets(&binary)?;
    let mut esks = 0;
    let mut data = None;
    for (i, &(tag, len, body)) in packets.iter().enumerate() {
        let first = if len > 0 { binary.get(body).copied() } else { None };
        if data.is_some() {
            return Err(format!("packet {} (tag {tag}) follows the encrypted data", i + 1));
        }
        match tag {
            1 | 3 => esks += 1,
            10 => {} // marker packet, ignored by every implementation
            18 if first != Some(1) => {
                return Err(format!(
                    "the encrypted data packet is version {} (SEIPDv2: GnuPG 2.2 cannot read it), expected 1",
                    first.map_or_else(|| "?".to_owned(), |v| v.to_string())
                ));
            }
            18 => data = Some(len),
            9 => return Err("the data is encrypted without integrity protection (no MDC)".to_owned()),
            20 => return Err("AEAD-encrypted data (GnuPG 2.2 cannot read it)".to_owned()),
            other => {
                return Err(format!(
                    "found a packet with tag {other} where encrypted data was expected"
                ));
            }
        }
    }
    if esks == 0 {
        return Err("no session key packet: the message is addressed to nobody".to_owned());
    }
    match data {
        None => Err("no encrypted data packet".to_owned()),
        // Version byte, at least an 8-byte block plus 2 of IV prefix, and the 22-byte MDC packet.
        Some(len) if len < 1 + 10 + 22 => Err(format!("the encrypted data packet is too short ({len} bytes)")),
        Some(_) => Ok(()),
    }
}

/// Removes ASCII armor: requires the end line and checks the CRC-24 when present.
fn dearmor(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the armored message is not text".to_owned())?;
    let mut lines = text.trim().lines().map(str::trim_end);
    lines.next(); // BEGIN
    // Armor headers ("Comment: ...") end with an empty line.
    let mut in_headers = true;
    let mut body = String::new();
    let mut crc = None;
    let mut ended = false;
    for line in lines {
        if ended {
            return Err("text after the armor's end line".to_owned());
        }
        if line == END {
            ended = true;
            continue;
        }
        if in_headers {
            if line.trim().is_empty() {
                in_headers = false;
                continue;
            }
            if line.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        if let Some(sum) = line.strip_prefix('=') {
            crc = Some(sum.to_owned());
            continue;
        }
        if crc.is_some() {
            return Err("armor data after the checksum line".to_owned());
        }
        body.push_str(line.trim());
    }
    if !ended {
        return Err(format!("the armor has no `{END}` line: the message is truncated"));
    }
    let data = STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("the armor's base64 is broken: {e}"))?;
    if let Some(sum) = crc {
        let want = STANDARD
            .decode(sum.as_bytes())
            .map_err(|_| "the armor checksum is not base64".to_owned())?;
        let got = crc24(&data).to_be_bytes();
        if want.as_slice() != &got[1..] {
            return Err("the armor checksum does not match: the message is corrupted".to_owned());
        }
    }
    Ok(data)
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB704CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

/// Splits binary OpenPGP data into (tag, body length, offset of the body's
/// first byte) per packet; every header and body must be complete.
fn packets(data: &[u8]) -> Result<Vec<(u8, usize, usize)>, String> {
    let truncated = |what: &str, at: usize| format!("the message is truncated: {what} at byte {at} runs past its end");
    let mut out = Vec::new();
    let mut pos = 0;
    if data.is_empty() {
        return Err("the message is empty".to_owned());
    }
    while pos < data.len() {
        if out.len() == MAX_PACKETS {
            return Err(format!("more than {MAX_PACKETS} packets"));
        }
        let start = pos;
        let header = data[pos];
        if header & 0x80 == 0 {
            return Err(format!("byte {pos} does not start an OpenPGP packet"));
        }
        pos += 1;
        let mut body = None;
        let (tag, len) = if header & 0x40 != 0 {
            // New format: one or more length octets, partial body lengths chained.
            let tag = header & 0x3f;
            let mut total = 0usize;
            loop {
                let Some(&first) = data.get(pos) else {
                    return Err(truncated("a packet header", start));
                };
                let (len, header_len, partial) = match first {
                    0..=191 => (usize::from(first), 1, false),
                    192..=223 => {
                        let Some(&second) = data.get(pos + 1) else {
                            return Err(truncated("a packet header", start));
                        };
                        (((usize::from(first) - 192) << 8) + usize::from(second) + 192, 2, false)
                    }
                    255 => {
                        let Some(b) = data.get(pos + 1..pos + 5) else {
                            return Err(truncated("a packet header", start));
                        };
                        (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 5, false)
                    }
                    _ => (1usize << (first & 0x1f), 1, true),
                };
                pos += header_len;
                if data.len() - pos < len {
                    return Err(truncated(&format!("packet {} (tag {tag})", out.len() + 1), start));
                }
                body.get_or_insert(pos);
                pos += len;
                total += len;
                if !partial {
                    break;
                }
            }
            (tag, total)
        } else {
            let tag = (header >> 2) & 0x0f;
            let len = match header & 3 {
                0 => data.get(pos).map(|&b| (usize::from(b), 1)),
                1 => data
                    .get(pos..pos + 2)
                    .map(|b| (usize::from(u16::from_be_bytes([b[0], b[1]])), 2)),
                2 => data
                    .get(pos..pos + 4)
                    .map(|b| (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 4)),
                _ => Some((data.len() - pos, 0)),
            };
            let Some((len, header_len)) = len else {
                return Err(truncated("a packet header", start));
            };
            pos += header_len;
            if data.len() - pos < len {
                return Err(truncated(&format!("packet {} (tag {tag})", out.len() + 1), start));
            }
            body = Some(pos);
            pos += len;
            (tag, len)
        };
        out.push((tag, len, body.unwrap_or(pos)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets_repo::pgp;
    use sequoia_openpgp::cert::CertBuilder;
    use std::time::{Duration, SystemTime};

    fn sealed() -> Vec<u8> {
        let cert = CertBuilder::general_purpose(Some("m <m@example.com>"))
            .generate()
            .unwrap()
            .0
            .strip_secret_key_material();
        let set = pgp::check_recipients(
            &[cert],
            SystemTime::now(),
            pgp::Validity {
                min: None,
                warn: Duration::ZERO,
            },
        )
        .unwrap();
        pgp::seal(&[7u8; 300], &set).unwrap()
    }

    #[test]
    fn a_whole_message_is_valid_armored_and_binary() {
        let armored = sealed();
        validate_message(&armored).unwrap();
        validate_message(&dearmor(&armored).unwrap()).unwrap();
    }

    #[test]
    fn every_truncation_is_refused_without_panicking() {
        let armored = sealed();
        let binary = dearmor(&armored).unwrap();
        for n in 0..binary.len() {
            assert!(validate_message(&binary[..n]).is_err(), "binary cut at {n}");
        }
        // Armored: every cut that loses a data byte, the checksum or the end line.
        let end = armored.len() - armored.trim_ascii_end().len();
        for n in 0..armored.len() - end - 1 {
            assert!(validate_message(&armored[..n]).is_err(), "armor cut at {n}");
        }
    }

    #[test]
    fn bit_flips_in_armor_and_trailing_packets_are_refused() {
        let armored = sealed();
        let text = String::from_utf8(armored.clone()).unwrap();
        // Flip one base64 character in the middle of the body.
        let mid = text.len() / 2;
        let c = text.as_bytes()[mid];
        let swapped = if c == b'A' { 'B' } else { 'A' };
        let mut flipped = text.clone();
        flipped.replace_range(mid..mid + 1, &swapped.to_string());
        if text.as_bytes()[mid].is_ascii_alphanumeric() {
            assert!(validate_message(flipped.as_bytes()).is_err());
        }
        let mut binary = dearmor(&armored).unwrap();
        binary.extend([0xcb, 0x01, b'x']); // a literal data packet after the end
        let err = validate_message(&binary).unwrap_err();
        assert!(err.contains("follows the encrypted data"), "{err}");
        assert!(validate_message(b"hello").is_err());
        // The same message claiming SEIPDv2, which GnuPG 2.2 cannot read.
        let mut v2 = dearmor(&armored).unwrap();
        let (tag, _, body) = *packets(&v2).unwrap().last().unwrap();
        assert_eq!((tag, v2[body]), (18, 1));
        v2[body] = 2;
        let err = validate_message(&v2).unwrap_err();
        assert!(err.contains("SEIPDv2"), "{err}");
        assert!(validate_message(b"").is_err());
    }

    #[test]
    fn crc24_matches_the_rfc_example() {
        // RFC 4880 6.1: the CRC of no data is the initial value.
        assert_eq!(crc24(b""), 0xB704CE);
    }
}
