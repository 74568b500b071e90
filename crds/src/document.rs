//! Reading YAML streams (several documents, `---` separated) into JSON values, as `kubectl`
//! does: empty documents are skipped, `List` objects are flattened.

use serde_json::Value;

/// A YAML stream that could not be parsed, with the location the parser reported.
#[derive(Debug, thiserror::Error)]
#[error("invalid YAML: {0}")]
pub struct YamlError(String);

/// Parses every document of `text`.
pub fn parse_stream(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| YamlError(e.to_string()))?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        flatten_into(doc, &mut out);
    }
    Ok(out)
}

fn flatten_into(doc: Value, out: &mut Vec<Value>) {
    match doc {
        Value::Null => {}
        Value::Object(mut map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List")) =>
        {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten_into(item, out);
                }
            }
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_streams_skips_empty_and_flattens_lists() {
        let text = "# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n- {apiVersion: v1, kind: Service, metadata: {name: c}}\n";
        let docs = parse_stream(text).unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn reports_bad_yaml() {
        let err = parse_stream("a: [1, 2\nb: c").unwrap_err().to_string();
        assert!(err.starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn keeps_strings_that_look_like_other_types_as_written() {
        let docs = parse_stream("hosts: [\"*\"]\nport: 80\nversion: \"1.0\"\n").unwrap();
        assert_eq!(docs[0]["hosts"][0], "*");
        assert_eq!(docs[0]["port"], 80);
        assert_eq!(docs[0]["version"], "1.0");
    }
}
