//! Splitting a JSON `kind: List` into its items without parsing them, so
//! that a fleet's Secrets are parsed on every core instead of one.
//!
//! A byte scanner tracks strings, escapes and nesting; each element of the
//! top-level `items` array is handed out as raw bytes, and everything else
//! (the "skeleton", with `items` emptied to `[]`) is kept to be parsed once
//! at the end. A document without `items` is all skeleton: a single Secret.

use std::io::BufRead;

/// Why splitting stopped.
#[derive(Debug, thiserror::Error)]
pub enum SplitError<E> {
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    #[error("not JSON: {0}")]
    Syntax(String),
    #[error("{what} is larger than the limit of {} MiB", limit >> 20)]
    TooLarge { what: String, limit: usize },
    #[error(transparent)]
    Sink(E),
}

/// What is left after the items were handed out.
pub struct Skeleton {
    /// The document with `items` replaced by `[]`.
    pub bytes: Vec<u8>,
    /// The number of items, when the document had a top-level `items` array.
    pub items: Option<usize>,
}

fn syntax<E>(message: impl Into<String>) -> SplitError<E> {
    SplitError::Syntax(message.into())
}

/// The largest item of a List (a Secret is a few KB).
pub const MAX_ITEM: usize = 64 * 1024 * 1024;
/// The largest document outside the items (a single Secret, or a List's
/// top level).
pub const MAX_SKELETON: usize = 64 * 1024 * 1024;

/// Where the bytes being scanned go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Skeleton,
    Item,
    Nowhere,
}

/// Scans `reader` (a JSON object) and hands each element of its top-level
/// `items` array to `on_item` with its index. Bytes are copied in spans and
/// strings are skipped with `memchr`, so the scan runs at memory speed.
pub fn split<R: BufRead, E>(
    mut reader: R,
    on_item: &mut dyn FnMut(usize, Vec<u8>) -> Result<(), E>,
) -> Result<Skeleton, SplitError<E>> {
    let mut skeleton = Vec::new();
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    let mut expect_key = false;
    let mut collecting_key = false;
    let mut key = Vec::new();
    let mut last_key_is_items = false;
    let mut in_items = false;
    let mut items: Option<usize> = None;
    let mut cur: Vec<u8> = Vec::new();
    let mut after_item = false;
    let mut n = 0usize;
    let mut dest = Dest::Skeleton;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        let mut mark = 0usize;
        let mut i = 0usize;
        while i < len {
            if in_str {
                if esc {
                    esc = false;
                    i += 1;
                    continue;
                }
                let Some(off) = memchr::memchr2(b'"', b'\\', &chunk[i..]) else {
                    if collecting_key && key.len() < 16 {
                        key.extend_from_slice(&chunk[i..len.min(i + 16)]);
                    }
                    break;
                };
                let j = i + off;
                if collecting_key && key.len() < 16 {
                    key.extend_from_slice(&chunk[i..j.min(i + 16)]);
                }
                if chunk[j] == b'\\' {
                    esc = true;
                } else {
                    in_str = false;
                    if collecting_key {
                        last_key_is_items = key == b"items";
                        collecting_key = false;
                    }
                }
                i = j + 1;
                continue;
            }
            let b = chunk[i];
            if in_items {
                match b {
                    b'"' => {
                        if dest != Dest::Item {
                            return Err(syntax(format!("items[{n}] is not an object")));
                        }
                        in_str = true;
                    }
                    b'{' | b'[' => {
                        if dest != Dest::Item {
                            if after_item {
                                return Err(syntax(format!("expected `,` before items[{n}]")));
                            }
                            if b != b'{' {
                                return Err(syntax(format!("items[{n}] is not an object")));
                            }
                            dest = Dest::Item;
                            mark = i;
                            cur = Vec::with_capacity(2048);
                        }
                        depth += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 1 {
                            if b != b']' || dest == Dest::Item || (n > 0 && !after_item) {
                                return Err(syntax("malformed `items` array"));
                            }
                            in_items = false;
                            items = Some(n);
                            skeleton.extend_from_slice(b"[]");
                            dest = Dest::Skeleton;
                            mark = i + 1;
                        } else if depth == 2 {
                            if dest != Dest::Item {
                                return Err(syntax("malformed `items` array"));
                            }
                            cur.extend_from_slice(&chunk[mark..=i]);
                            on_item(n, std::mem::take(&mut cur)).map_err(SplitError::Sink)?;
                            n += 1;
                            after_item = true;
                            dest = Dest::Nowhere;
                            mark = i + 1;
                        }
                    }
                    b',' if depth == 2 => {
                        if !after_item {
                            return Err(syntax(format!("unexpected `,` before items[{n}]")));
                        }
                        after_item = false;
                    }
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    _ if dest != Dest::Item => return Err(syntax(format!("items[{n}] is not an object"))),
                    _ => {}
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    in_str = true;
                    collecting_key = depth == 1 && expect_key;
                    key.clear();
                }
                b'[' if depth == 1 && !expect_key && last_key_is_items && items.is_none() => {
                    skeleton.extend_from_slice(&chunk[mark..i]);
                    in_items = true;
                    depth += 1;
                    after_item = false;
                    dest = Dest::Nowhere;
                    mark = i + 1;
                }
                b'{' | b'[' => {
                    if depth == 0 && (b != b'{' || !skeleton.iter().chain(&chunk[mark..i]).all(u8::is_ascii_whitespace))
                    {
                        return Err(syntax("expected a JSON object"));
                    }
                    depth += 1;
                    expect_key = depth == 1 && b == b'{';
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Err(syntax("unbalanced brackets"));
                    }
                    depth -= 1;
                }
                b':' if depth == 1 => expect_key = false,
                b',' if depth == 1 => expect_key = true,
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ if depth == 0 => return Err(syntax("expected a JSON object")),
                _ => {}
            }
            i += 1;
        }
        match dest {
            Dest::Skeleton => skeleton.extend_from_slice(&chunk[mark..len]),
            Dest::Item => cur.extend_from_slice(&chunk[mark..len]),
            Dest::Nowhere => {}
        }
        reader.consume(len);
        // Checked once per chunk: a chunk is at most the reader's buffer.
        if cur.len() > MAX_ITEM {
            return Err(SplitError::TooLarge {
                what: format!("items[{n}]"),
                limit: MAX_ITEM,
            });
        }
        if skeleton.len() > MAX_SKELETON {
            return Err(SplitError::TooLarge {
                what: "the document".to_owned(),
                limit: MAX_SKELETON,
            });
        }
    }
    if in_items || depth != 0 || in_str {
        return Err(syntax("unexpected end of input"));
    }
    Ok(Skeleton { bytes: skeleton, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<(Vec<String>, String, Option<usize>), SplitError<()>> {
        let mut got = Vec::new();
        // A tiny buffer exercises chunk boundaries.
        let reader = std::io::BufReader::with_capacity(3, text.as_bytes());
        let sk = split(reader, &mut |i, b| {
            assert_eq!(i, got.len());
            got.push(String::from_utf8(b).unwrap());
            Ok(())
        })?;
        Ok((got, String::from_utf8(sk.bytes).unwrap(), sk.items))
    }

    #[test]
    fn splits_items_and_keeps_the_skeleton() {
        let text = r#" {"apiVersion":"v1","items": [ {"a":"}]\"{","b":[1,{"c":2}]} ,
            {"kind":"Secret"} ],"kind":"List","metadata":{"items":[1]}}"#;
        let (items, skeleton, n) = run(text).unwrap();
        assert_eq!(items, vec![r#"{"a":"}]\"{","b":[1,{"c":2}]}"#, r#"{"kind":"Secret"}"#]);
        assert_eq!(n, Some(2));
        let v: serde_json::Value = serde_json::from_str(&skeleton).unwrap();
        assert_eq!(v["items"], serde_json::json!([]));
        assert_eq!(
            v["metadata"]["items"],
            serde_json::json!([1]),
            "only the top-level items are split"
        );
    }

    #[test]
    fn a_single_secret_is_all_skeleton() {
        let text = r#"{"kind":"Secret","data":{"items":"x"}}"#;
        let (items, skeleton, n) = run(text).unwrap();
        assert!(items.is_empty());
        assert_eq!(n, None);
        assert_eq!(skeleton, text);
        let (_, _, n) = run(r#"{"kind":"List","items":[]}"#).unwrap();
        assert_eq!(n, Some(0));
    }

    #[test]
    fn rejects_broken_lists() {
        for bad in [
            r#"{"items":[{"a":1} {"b":2}]}"#,
            r#"{"items":[1]}"#,
            r#"{"items":["x"]}"#,
            r#"{"items":[{"a":1},]}"#,
            r#"{"items":[{"a":1}"#,
            r#"{"items":[,{"a":1}]}"#,
            r#"[]"#,
            r#"{"a":"#,
            r#"x{"items":[]}"#,
        ] {
            assert!(matches!(run(bad), Err(SplitError::Syntax(_))), "{bad}");
        }
    }
}
