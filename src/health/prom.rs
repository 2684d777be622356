//! Prometheus HTTP API responses (`/api/v1/query`, `/api/v1/query_range`)
//! parsed into typed values, with errors that name the query and the field.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A series' labels.
pub type Labels = BTreeMap<String, String>;

/// One element of an instant vector: a series' labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// One series of a range query: its labels and `(unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(f64, f64)>,
}

/// A response that cannot be used, naming the query and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("query `{query}`: the response is not JSON: {detail}")]
    NotJson { query: String, detail: String },
    #[error("query `{query}`: field `{field}`: {problem}")]
    Field {
        query: String,
        field: String,
        problem: String,
    },
    #[error("query `{query}`: Prometheus answered with an error ({error_type}): {error}")]
    Api {
        query: String,
        error_type: String,
        error: String,
    },
}

/// The most a Prometheus answer may hold: far above any answer the rules'
/// queries produce (a few series per rule), far below what hurts.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Returns `text` with control characters escaped (`\u{1b}`) but line
/// feeds kept, so that text from a server cannot drive the terminal.
pub use crate::untrusted::escape_lines as printable;

#[derive(Deserialize)]
struct RawResponse {
    status: String,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    metric: Labels,
    value: (f64, String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeries {
    metric: Labels,
    values: Vec<(f64, String)>,
}

fn field_err(query: &str, field: impl Into<String>, problem: impl Into<String>) -> ResponseError {
    ResponseError::Field {
        query: query.to_owned(),
        field: printable(&field.into()),
        problem: printable(&problem.into()),
    }
}

/// Parses the envelope and returns the `data.result` of the expected type.
fn result_of(query: &str, body: &[u8], want: &str) -> Result<serde_json::Value, ResponseError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| ResponseError::NotJson {
        query: query.to_owned(),
        detail: e.to_string(),
    })?;
    let raw: RawResponse = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "(top level)".to_owned() } else { path };
        field_err(query, field, e.into_inner().to_string())
    })?;
    match raw.status.as_str() {
        "success" => {}
        "error" => {
            return Err(ResponseError::Api {
                query: query.to_owned(),
                error_type: printable(&raw.error_type.unwrap_or_else(|| "unknown".to_owned())),
                error: printable(
                    &raw.error
                        .unwrap_or_else(|| "(no message)".to_owned())
                        .replace('\n', " "),
                ),
            });
        }
        other => {
            return Err(field_err(
                query,
                "status",
                format!("`{}` is neither `success` nor `error`", printable(other)),
            ));
        }
    }
    let data = raw.data.ok_or_else(|| field_err(query, "data", "is missing"))?;
    if data.result_type != want {
        return Err(field_err(
            query,
            "data.resultType",
            format!("is `{}`, expected `{want}`", data.result_type),
        ));
    }
    Ok(data.result)
}

fn number(query: &str, field: impl Fn() -> String, text: &str) -> Result<f64, ResponseError> {
    let v: f64 = text
        .parse()
        .map_err(|_| field_err(query, field(), format!("`{text}` is not a number")))?;
    if !v.is_finite() {
        return Err(field_err(query, field(), format!("`{text}` is not a finite number")));
    }
    Ok(v)
}

fn typed<T: serde::de::DeserializeOwned>(query: &str, result: serde_json::Value) -> Result<T, ResponseError> {
    serde_path_to_error::deserialize(result).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "data.result".to_owned()
        } else {
            format!(
                "data.result{}",
                if path.starts_with('[') {
                    path
                } else {
                    format!(".{path}")
                }
            )
        };
        field_err(query, field, e.into_inner().to_string())
    })
}

/// Parses an instant query's response (`resultType` `vector`).
pub fn parse_vector(query: &str, body: &[u8]) -> Result<Vec<Sample>, ResponseError> {
    let result = result_of(query, body, "vector")?;
    let raw: Vec<RawSample> = typed(query, result)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let value = number(query, || format!("data.result[{i}].value[1]"), &s.value.1)?;
            Ok(Sample {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

/// Parses a range query's response (`resultType` `matrix`).
pub fn parse_matrix(query: &str, body: &[u8]) -> Result<Vec<Series>, ResponseError> {
    let result = result_of(query, body, "matrix")?;
    let raw: Vec<RawSeries> = typed(query, result)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let points = s
                .values
                .iter()
                .enumerate()
                .map(|(j, (t, v))| Ok((*t, number(query, || format!("data.result[{i}].values[{j}][1]"), v)?)))
                .collect::<Result<Vec<_>, ResponseError>>()?;
            Ok(Series {
                labels: s.metric,
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verr(body: &str) -> String {
        parse_vector("q.total", body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_vector() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"method":"jwt","status":"failed"},"value":[1795381800,"3"]}]},"warnings":["w"]}"#;
        let v = parse_vector("q", body.as_bytes()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels["method"], "jwt");
        assert_eq!(v[0].value, 3.0);
    }

    #[test]
    fn parses_a_matrix() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"index_name":"a"},"values":[[1795381215,"1"],[1795381230.5,"4.5"]]}]}}"#;
        let m = parse_matrix("q", body.as_bytes()).unwrap();
        assert_eq!(m[0].points, vec![(1795381215.0, 1.0), (1795381230.5, 4.5)]);
    }

    #[test]
    fn errors_name_the_query_and_field() {
        assert!(verr("{").starts_with("query `q.total`: the response is not JSON: "));
        assert_eq!(
            verr(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#),
            "query `q.total`: field `data.resultType`: is `matrix`, expected `vector`"
        );
        assert_eq!(
            verr(r#"{"status":"success"}"#),
            "query `q.total`: field `data`: is missing"
        );
        assert_eq!(
            verr(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            "query `q.total`: Prometheus answered with an error (bad_data): parse error"
        );
        assert_eq!(
            verr(r#"{"status":"maybe"}"#),
            "query `q.total`: field `status`: `maybe` is neither `success` nor `error`"
        );
        assert!(
            verr(r#"{"data":{"resultType":"vector","result":[]}}"#)
                .starts_with("query `q.total`: field `(top level)`: missing field `status`"),
            "{}",
            verr(r#"{"data":{"resultType":"vector","result":[]}}"#)
        );
        assert_eq!(
            verr(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#),
            "query `q.total`: field `data.result[0].value[1]`: `x` is not a number"
        );
        assert_eq!(
            verr(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#),
            "query `q.total`: field `data.result[0].value[1]`: `NaN` is not a finite number"
        );
        let e = verr(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":1},"value":[1,"1"]}]}}"#,
        );
        assert!(
            e.starts_with("query `q.total`: field `data.result[0].metric.a`: invalid type"),
            "{e}"
        );
        let e = verr(r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#);
        assert!(
            e.starts_with("query `q.total`: field `data.result`: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn server_text_in_errors_has_control_characters_escaped() {
        let e = verr("{\"status\":\"error\",\"errorType\":\"x\\u001b[31m\",\"error\":\"bad\\u001b]0;pwned\\u0007\"}");
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.contains("\\u{1b}[31m"), "{e}");
        assert_eq!(printable("a\tb\u{9b}c\nd"), "a\\u{9}b\\u{9b}c\nd");
    }

    #[test]
    fn odd_inputs_are_errors_not_panics() {
        let bodies: &[&[u8]] = &[
            b"",
            b"null",
            b"[]",
            b"\xff\xfe",
            br#"{"status":"success","data":null}"#,
            br#"{"status":"success","data":{"resultType":"vector"}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[]}]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":["1","1"]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1e400,"1"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"+Inf"]]}]}}"#,
        ];
        for body in bodies {
            assert!(parse_vector("q", body).is_err(), "{}", String::from_utf8_lossy(body));
            assert!(parse_matrix("q", body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
