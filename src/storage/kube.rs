//! Reading `storage-secret-store` Secrets as kubectl prints them: one
//! Secret (`-o json` or `-o yaml`) or a `kind: List` of many. JSON is read
//! as a stream, one Secret at a time, so a fleet-sized List never sits in
//! memory; YAML is read whole.

use crate::untrusted;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// The Secret's name.
pub const SECRET_NAME: &str = "storage-secret-store";
/// The Secret's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The data key that holds the file.
pub const DATA_KEY: &str = "slclient.toml";

/// A Secret as read, before it is checked.
#[derive(Default, Deserialize)]
pub struct RawSecret {
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Meta,
    pub data: Option<BTreeMap<String, String>>,
}

/// The parts of a Secret's metadata rekey reads.
#[derive(Default, Deserialize)]
pub struct Meta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(rename = "clusterName")]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Meta {
    /// Returns the value of the first label or annotation called one of
    /// `names`, with or without a `prefix/`.
    pub fn lookup(&self, names: &[&str]) -> Option<&str> {
        for map in [&self.labels, &self.annotations].into_iter().flatten() {
            for (k, v) in map {
                let base = k.rsplit_once('/').map_or(k.as_str(), |(_, b)| b);
                if names.contains(&base) && !v.is_empty() {
                    return Some(v);
                }
            }
        }
        None
    }
}

/// A checked `storage-secret-store` Secret: who it belongs to and its
/// still-encoded `slclient.toml`.
pub struct StorageSecret {
    /// The cluster ID (label/annotation `cluster-id`, `metadata.clusterName`, or the file name).
    pub cluster: String,
    /// Account ID from a label or annotation (`account-id`, `accountID`, `account_id`).
    pub account: Option<String>,
    /// Resource group ID from a label or annotation.
    pub resource_group: Option<String>,
    /// Region from a label or annotation (`region`, e.g. `topology.kubernetes.io/region`).
    pub region: Option<String>,
    /// Provider from a label or annotation (`provider`, `provider-type`, `providerType`).
    pub provider: Option<String>,
    /// `data["slclient.toml"]`: base64 of the file.
    pub data: Zeroizing<String>,
}

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSecret")
            .field("kind", &self.kind)
            .field("name", &self.metadata.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StorageSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageSecret")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Why a document is not a usable `storage-secret-store` Secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the input is empty")]
    Empty,
    #[error("not JSON or YAML: {0}")]
    Syntax(String),
    #[error("field `kind` is {0:?}, expected \"Secret\" (or a List of them)")]
    WrongKind(String),
    #[error("field `kind` is missing, expected \"Secret\"")]
    NoKind,
    #[error("field `metadata.name` is {0:?}, expected \"storage-secret-store\"")]
    WrongName(String),
    #[error("field `metadata.namespace` is {0:?}, expected \"kube-system\"")]
    WrongNamespace(String),
    #[error("field `data.slclient.toml` is missing")]
    NoData,
    #[error("the List has no items")]
    EmptyList,
    #[error("YAML nested deeper than {MAX_YAML_DEPTH} levels (line {0}): refused before parsing")]
    TooDeep(usize),
    #[error("YAML input larger than the limit of {} MiB (use JSON, which is streamed, for larger fleets)", MAX_YAML >> 20)]
    TooLarge,
}

/// The largest YAML input read (YAML is parsed whole; JSON is streamed).
pub const MAX_YAML: usize = 128 * 1024 * 1024;
/// The deepest YAML nesting accepted: a Secret or a List of them is 5 deep.
pub const MAX_YAML_DEPTH: usize = untrusted::MAX_DEPTH;

/// Checks that YAML nests at most [`MAX_YAML_DEPTH`] levels (see
/// [`untrusted::check_depth`]): YAML parsers take quadratic time or worse
/// on deep nesting, so it is refused before parsing.
pub fn check_yaml_depth(bytes: &[u8]) -> Result<(), SecretError> {
    untrusted::check_depth(bytes, MAX_YAML_DEPTH).map_err(|e| match e {
        untrusted::YamlBoundError::TooDeep { line, .. } => SecretError::TooDeep(line),
    })
}

impl RawSecret {
    /// Checks kind, name, namespace and data; `fallback` names the cluster
    /// when the Secret does not.
    pub fn check(mut self, fallback: impl FnOnce() -> String) -> Result<StorageSecret, SecretError> {
        match self.kind.as_deref() {
            Some("Secret") => {}
            Some(other) => return Err(SecretError::WrongKind(other.to_owned())),
            None => return Err(SecretError::NoKind),
        }
        let name = self.metadata.name.as_deref().unwrap_or("");
        if name != SECRET_NAME {
            return Err(SecretError::WrongName(name.to_owned()));
        }
        if let Some(ns) = self.metadata.namespace.as_deref()
            && ns != NAMESPACE
        {
            return Err(SecretError::WrongNamespace(ns.to_owned()));
        }
        let data = self
            .data
            .as_mut()
            .and_then(|d| d.remove(DATA_KEY))
            .ok_or(SecretError::NoData)?;
        let m = &self.metadata;
        let cluster = m
            .lookup(&["cluster-id", "clusterID", "cluster_id", "clusterid"])
            .or(m.cluster_name.as_deref().filter(|s| !s.is_empty()))
            .map(str::to_owned)
            .unwrap_or_else(fallback);
        Ok(StorageSecret {
            cluster,
            account: m
                .lookup(&["account-id", "accountID", "account_id", "accountid"])
                .map(str::to_owned),
            resource_group: m
                .lookup(&[
                    "resource-group-id",
                    "resourceGroupID",
                    "resource_group_id",
                    "resource-group",
                ])
                .map(str::to_owned),
            region: m.lookup(&["region"]).map(str::to_owned),
            provider: m
                .lookup(&["provider", "provider-type", "provider_type", "providerType"])
                .map(str::to_owned),
            data: Zeroizing::new(data),
        })
    }
}

/// Returns a parser message with every double-quoted string replaced by
/// `"…"`: serde quotes the offending value ("invalid type: string \"...\""),
/// and in a Secret that value can be key material.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == '"' {
                    break;
                }
            }
            out.push_str("…\"");
        }
    }
    out
}

/// Why reading stopped: the input, or the sink that took the Secrets.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("{0}")]
    Input(SecretError),
    #[error("item {index}: {error}")]
    Item { index: usize, error: SecretError },
    #[error(transparent)]
    Sink(E),
}

/// The shape of a document: a single Secret or a List (`index` per item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Single,
    Listed(usize),
}

/// Reads JSON from `reader` as a stream and hands each Secret to `sink`.
pub fn read_json<R: std::io::Read, E>(
    reader: R,
    sink: &mut dyn FnMut(Item, RawSecret) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let mut state = State { sink, stopped: None };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = TopSeed { state: &mut state }.deserialize(&mut de).and_then(|top| {
        de.end()?;
        Ok(top)
    });
    if let Some(e) = state.stopped.take() {
        return Err(e);
    }
    let top = result.map_err(|e| ReadError::Input(SecretError::Syntax(scrub(&e.to_string()))))?;
    finish(top, state.sink)
}

/// Reads a whole YAML (or JSON) document and hands each Secret to `sink`.
pub fn read_yaml<E>(bytes: &[u8], sink: &mut dyn FnMut(Item, RawSecret) -> Result<(), E>) -> Result<(), ReadError<E>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReadError::Input(SecretError::Empty));
    }
    if bytes.len() > MAX_YAML {
        return Err(ReadError::Input(SecretError::TooLarge));
    }
    check_yaml_depth(bytes).map_err(ReadError::Input)?;
    #[derive(Deserialize)]
    struct Doc {
        kind: Option<String>,
        #[serde(default)]
        metadata: Meta,
        data: Option<BTreeMap<String, String>>,
        items: Option<Vec<RawSecret>>,
    }
    let doc: Doc =
        serde_yaml_ng::from_slice(bytes).map_err(|e| ReadError::Input(SecretError::Syntax(scrub(&e.to_string()))))?;
    match doc.items {
        Some(items) => {
            check_list_kind(doc.kind.as_deref()).map_err(ReadError::Input)?;
            if items.is_empty() {
                return Err(ReadError::Input(SecretError::EmptyList));
            }
            for (i, item) in items.into_iter().enumerate() {
                sink(Item::Listed(i), item).map_err(ReadError::Sink)?;
            }
            Ok(())
        }
        None => sink(
            Item::Single,
            RawSecret {
                kind: doc.kind,
                metadata: doc.metadata,
                data: doc.data,
            },
        )
        .map_err(ReadError::Sink),
    }
}

fn check_list_kind(kind: Option<&str>) -> Result<(), SecretError> {
    match kind {
        Some(k) if k == "List" || k == "SecretList" => Ok(()),
        Some(k) => Err(SecretError::WrongKind(k.to_owned())),
        None => Err(SecretError::NoKind),
    }
}

struct State<'a, E> {
    sink: &'a mut dyn FnMut(Item, RawSecret) -> Result<(), E>,
    stopped: Option<ReadError<E>>,
}

#[derive(Default)]
struct Top {
    single: RawSecret,
    items: Option<usize>,
}

fn finish<E>(top: Top, sink: &mut dyn FnMut(Item, RawSecret) -> Result<(), E>) -> Result<(), ReadError<E>> {
    match top.items {
        Some(n) => {
            check_list_kind(top.single.kind.as_deref()).map_err(ReadError::Input)?;
            if n == 0 {
                return Err(ReadError::Input(SecretError::EmptyList));
            }
            Ok(())
        }
        None => sink(Item::Single, top.single).map_err(ReadError::Sink),
    }
}

struct TopSeed<'s, 'a, E> {
    state: &'s mut State<'a, E>,
}

impl<'de, E> DeserializeSeed<'de> for TopSeed<'_, '_, E> {
    type Value = Top;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, E> Visitor<'de> for TopSeed<'_, '_, E> {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Secret or a List of Secrets")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut top = Top::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => top.single.kind = map.next_value()?,
                "metadata" => top.single.metadata = map.next_value::<Option<Meta>>()?.unwrap_or_default(),
                "data" => top.single.data = map.next_value()?,
                "items" => {
                    let n = map.next_value_seed(ItemsSeed {
                        state: &mut *self.state,
                    })?;
                    top.items = Some(n);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

struct ItemsSeed<'s, 'a, E> {
    state: &'s mut State<'a, E>,
}

impl<'de, E> DeserializeSeed<'de> for ItemsSeed<'_, '_, E> {
    type Value = usize;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E> Visitor<'de> for ItemsSeed<'_, '_, E> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of Secrets")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(item) = seq.next_element::<RawSecret>()? {
            if let Err(e) = (self.state.sink)(Item::Listed(n), item) {
                self.state.stopped = Some(ReadError::Sink(e));
                return Err(de::Error::custom("stopped"));
            }
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_json(text: &str) -> Result<Vec<(Item, RawSecret)>, ReadError<std::convert::Infallible>> {
        let mut out = Vec::new();
        read_json(text.as_bytes(), &mut |i, s| {
            out.push((i, s));
            Ok(())
        })?;
        Ok(out)
    }

    const ONE: &str = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"storage-secret-store","namespace":"kube-system","labels":{"example.com/cluster-id":"c1"}},"data":{"slclient.toml":"eA=="},"type":"Opaque"}"#;

    #[test]
    fn reads_a_single_secret_and_a_list() {
        let got = collect_json(ONE).unwrap();
        assert_eq!(got.len(), 1);
        let s = got.into_iter().next().unwrap().1.check(|| "file".into()).unwrap();
        assert_eq!(s.cluster, "c1");
        assert_eq!(s.data.as_str(), "eA==");
        let list = format!(r#"{{"apiVersion":"v1","items":[{ONE},{ONE}],"kind":"List","metadata":{{}}}}"#);
        let got = collect_json(&list).unwrap();
        assert_eq!(
            got.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![Item::Listed(0), Item::Listed(1)]
        );
    }

    #[test]
    fn rejects_wrong_kind_name_and_empty_lists() {
        let cm = ONE.replace("\"Secret\"", "\"ConfigMap\"");
        let s = collect_json(&cm).unwrap().pop().unwrap().1;
        assert_eq!(
            s.check(String::new).unwrap_err(),
            SecretError::WrongKind("ConfigMap".into())
        );
        let other = ONE.replace("storage-secret-store", "all-icr-io");
        let s = collect_json(&other).unwrap().pop().unwrap().1;
        assert_eq!(
            s.check(String::new).unwrap_err(),
            SecretError::WrongName("all-icr-io".into())
        );
        let e = collect_json(r#"{"kind":"List","items":[]}"#).unwrap_err();
        assert!(matches!(e, ReadError::Input(SecretError::EmptyList)));
        let e = collect_json(r#"{"kind":"Secret""#).unwrap_err();
        assert!(matches!(e, ReadError::Input(SecretError::Syntax(_))));
        let e = collect_json("").unwrap_err();
        assert!(matches!(e, ReadError::Input(SecretError::Syntax(_))));
    }

    #[test]
    fn parser_messages_do_not_quote_values() {
        let text = r#"{"kind":"Secret","data":"SECRET-VALUE-\\"-x"}"#;
        let e = collect_json(text).unwrap_err().to_string();
        assert!(!e.contains("SECRET-VALUE") && !e.contains("-x"), "{e}");
        assert!(e.contains("invalid type: string \"…\""), "{e}");
        let e = read_yaml::<std::convert::Infallible>(b"kind: Secret\ndata: SECRET-VALUE\n", &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRET-VALUE"), "{e}");
    }

    #[test]
    fn yaml_list() {
        let y = "apiVersion: v1\nkind: List\nitems:\n- kind: Secret\n  metadata:\n    name: storage-secret-store\n  data:\n    slclient.toml: eA==\n";
        let mut n = 0;
        read_yaml::<()>(y.as_bytes(), &mut |_, s| {
            s.check(|| "f".into()).unwrap();
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(matches!(
            read_yaml::<()>(b"  \n", &mut |_, _| Ok(())),
            Err(ReadError::Input(SecretError::Empty))
        ));
    }
}
