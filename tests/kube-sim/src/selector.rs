//! Label and field selectors, as in `?labelSelector=` / `?fieldSelector=`.
//!
//! The grammar follows `k8s.io/apimachinery/pkg/labels`: comma-separated requirements, where
//! commas inside `in (...)` / `notin (...)` sets do not split. Negative requirements (`!=`,
//! `notin`, `!key`) match objects that lack the label, as on the real server.

use std::collections::BTreeMap;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// `key>N` / `key<N`: integer comparisons, which the real grammar also has.
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ')' in selector {s:?}"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in selector {s:?}"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Label keys and values: an optional DNS prefix and `/`, then `[A-Za-z0-9._-]`.
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_set(key: &str, rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set after {key:?}, got {rest:?}"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(format!(
            "for 'in', 'notin' operators, values set can't be empty (key {key:?})"
        ));
    }
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(values)
}

/// Finds ` in ` / ` notin ` as a whole word after the key.
fn split_word_op<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let (key, rest) = term.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let after = rest.strip_prefix(word)?;
    if after.starts_with(|c: char| c.is_whitespace() || c == '(') {
        Some((key, after))
    } else {
        None
    }
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let term = term.trim();
    if term.is_empty() {
        return Err("empty requirement in selector".into());
    }
    let check_key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(format!("invalid label key {k:?}"))
        }
    };
    let check_value = |v: &str| -> Result<String, String> {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_string())
        } else {
            Err(format!("invalid label value: {v:?}"))
        }
    };
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key)?));
    }
    if let Some((key, rest)) = split_word_op(term, "notin") {
        return Ok(Requirement::NotIn(check_key(key)?, parse_set(key, rest)?));
    }
    if let Some((key, rest)) = split_word_op(term, "in") {
        return Ok(Requirement::In(check_key(key)?, parse_set(key, rest)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(check_key(k)?, check_value(v)?));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Ok(Requirement::Equals(check_key(k)?, check_value(v)?));
    }
    if let Some((k, v)) = term.split_once('=') {
        return Ok(Requirement::Equals(check_key(k)?, check_value(v)?));
    }
    for (op, gt) in [('>', true), ('<', false)] {
        if let Some((k, v)) = term.split_once(op) {
            let n: i64 = v.trim().parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer: {v:?}")
            })?;
            let k = check_key(k)?;
            return Ok(if gt {
                Requirement::GreaterThan(k, n)
            } else {
                Requirement::LessThan(k, n)
            });
        }
    }
    Ok(Requirement::Exists(check_key(term)?))
}

impl LabelSelector {
    /// Parses the `labelSelector` query value; the error text goes into a 400 Status.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top_level(s)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// One field selector term: `field=value`, `field==value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector (conjunction of terms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self(terms))
    }

    /// Whether the object is selected; fields are dotted paths into the object, and a missing
    /// field compares as the empty string (as the real server's field sets do).
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.0.iter().all(|t| {
            let actual = lookup_field(obj, &t.field);
            (actual == t.value) != t.negated
        })
    }
}

/// The string form of a dotted field path, `""` when absent.
fn lookup_field(obj: &serde_json::Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse(
            "a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g,app.kubernetes.io/name=web,n>4,m<2",
        )
        .unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("a".into(), "1".into()),
                Requirement::Equals("b".into(), "2".into()),
                Requirement::NotEquals("c".into(), "3".into()),
                Requirement::In("d".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("e".into(), vec!["z".into()]),
                Requirement::Exists("f".into()),
                Requirement::DoesNotExist("g".into()),
                Requirement::Equals("app.kubernetes.io/name".into(), "web".into()),
                Requirement::GreaterThan("n".into(), 4),
                Requirement::LessThan("m".into(), 2),
            ]
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["a in (x", "a in ()", "a=b c", "=x", "a in x", "n>x", "a)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn matching_semantics() {
        let l = labels(&[("team", "blue"), ("tier", "web"), ("n", "7")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m(""));
        assert!(m("team=blue"));
        assert!(!m("team=red"));
        assert!(m("team!=red"));
        assert!(m("missing!=x"), "!= matches when the label is absent");
        assert!(m("team in (red,blue)"));
        assert!(!m("team notin (red,blue)"));
        assert!(m("missing notin (a)"), "notin matches when absent");
        assert!(!m("missing in (a)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing"));
        assert!(m("team=blue,tier in (web)"));
        assert!(!m("team=blue,tier=db"));
        assert!(m("n>5") && !m("n>7") && m("n<8"));
    }

    #[test]
    fn field_selector() {
        let obj = json!({"metadata": {"name": "cm", "namespace": "demo"}, "type": "Opaque"});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&obj);
        assert!(m("metadata.name=cm"));
        assert!(m("metadata.name==cm,metadata.namespace=demo"));
        assert!(!m("metadata.name!=cm"));
        assert!(m("metadata.namespace!=other"));
        assert!(m("type=Opaque"));
        assert!(!m("spec.nodeName=x"));
        assert!(m("spec.nodeName="));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
