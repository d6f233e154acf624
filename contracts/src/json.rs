//! JSON parsing that notices repeated object members.
//!
//! `serde_json::Value` keeps the last of two members with the same name, silently. JSON
//! (RFC 8259 §4) only says names *should* be unique, and parsers disagree on which one wins
//! (Go's `encoding/json`, which Keptn uses, takes the last, others the first or refuse), so a
//! document with `"project"` twice can mean one thing to the sender and another to us. This
//! parser builds the same `Value` in one pass but records the first repeated member of the
//! document, with its path, so the caller can refuse it with a message that names it.
//! Everything else (syntax, the recursion limit of 128 nested arrays or objects, numbers) is
//! `serde_json`'s.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A member that appears more than once in one JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    /// Where the object is: the member names and array indexes leading to it from the
    /// document's root, empty for the root object itself.
    pub(crate) parents: Vec<String>,
    /// The repeated member's name.
    pub(crate) key: String,
}

impl Duplicate {
    /// The path of the repeated member, dot-separated (`data.deployment.deploymentstrategy`).
    pub(crate) fn path(&self) -> String {
        let mut path = self.parents.join(".");
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&self.key);
        path
    }
}

/// A parsed document and its first repeated member, if any (the last occurrence of a
/// repeated member is the one kept in the value, as `serde_json` would).
pub(crate) struct Parsed {
    pub(crate) value: Value,
    /// A member of the root object repeated, if any, else the first repeated member
    /// anywhere below it: a repeated `id` is never hidden behind one inside `data` that
    /// came first.
    pub(crate) duplicate: Option<Duplicate>,
}

#[derive(Default)]
struct Found {
    in_root: Option<Duplicate>,
    below_root: Option<Duplicate>,
}

/// Parses `bytes` as one JSON document.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, serde_json::Error> {
    let found = RefCell::new(Found::default());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed {
        path: &Path::Root,
        found: &found,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    let found = found.into_inner();
    Ok(Parsed {
        value,
        duplicate: found.in_root.or(found.below_root),
    })
}

/// Where the value being read sits; a chain of borrowed links, so reading costs nothing
/// unless a duplicate is found.
enum Path<'a> {
    Root,
    Member(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn segments(&self) -> Vec<String> {
        let mut segments = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Member(parent, name) => {
                    segments.push((*name).to_owned());
                    at = parent;
                }
                Path::Index(parent, index) => {
                    segments.push(index.to_string());
                    at = parent;
                }
            }
        }
        segments.reverse();
        segments
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    path: &'a Path<'a>,
    found: &'a RefCell<Found>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = ValueSeed {
                path: &path,
                found: self.found,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = Path::Member(self.path, &key);
            let value = access.next_value_seed(ValueSeed {
                path: &path,
                found: self.found,
            })?;
            if map.contains_key(&key) {
                let mut found = self.found.borrow_mut();
                let slot = match self.path {
                    Path::Root => &mut found.in_root,
                    _ => &mut found.below_root,
                };
                if slot.is_none() {
                    *slot = Some(Duplicate {
                        parents: self.path.segments(),
                        key: key.clone(),
                    });
                }
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_serde_json() {
        for text in [
            r#"{"a": [1, -2, 3.5, 1e300, true, null, "x\u00e9"], "b": {"c": {}}}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
        ] {
            let ours = parse(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours.value, theirs, "{text}");
            assert!(ours.duplicate.is_none());
        }
        for text in ["", "{", "[1,]", "{\"a\":1} x", "1e400", "\"\\ud800\""] {
            assert!(parse(text.as_bytes()).is_err(), "{text:?}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn finds_the_first_repeated_member_with_its_path() {
        let parsed =
            parse(br#"{"id": "a", "data": {"p": 1, "p": 2, "q": {"p": 3, "p": 4}}}"#).unwrap();
        // The last occurrence is kept, as serde_json keeps it.
        assert_eq!(
            parsed.value,
            json!({"id": "a", "data": {"p": 2, "q": {"p": 4}}})
        );
        let duplicate = parsed.duplicate.unwrap();
        assert_eq!(duplicate.path(), "data.p");
        assert_eq!(duplicate.parents, vec!["data".to_owned()]);

        let parsed = parse(br#"{"data": {"p": 1, "p": 2}, "id": "a", "id": "b"}"#).unwrap();
        assert_eq!(parsed.duplicate.unwrap().path(), "id", "the root's first");
        let parsed = parse(br#"{"a": [{}, {"x": 1, "x": 1}]}"#).unwrap();
        assert_eq!(parsed.duplicate.unwrap().path(), "a.1.x");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing_the_stack() {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let text = format!("{}{}", open.repeat(5000), close.repeat(5000));
            let err = parse(text.as_bytes()).err().expect("too deep");
            assert!(err.to_string().contains("recursion limit"), "{err}");
        }
        let text = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse(text.as_bytes()).is_ok());
    }
}
