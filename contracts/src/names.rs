//! Keptn project, stage and service names.
//!
//! These names become Kubernetes namespaces (`<project>-<stage>`), Helm release names and chart
//! paths. A name from an event is untrusted input: it is checked here against Keptn's own rule
//! before the worker builds anything from it, and a bad one is answered with a message a person
//! can act on instead of a Kubernetes or Helm error.

use std::fmt;

/// The longest name Kubernetes accepts for a namespace (an RFC 1123 label).
///
/// The namespace is `<project>-<stage>`, so no single name may be longer either.
pub const MAX_NAME_LEN: usize = 63;

/// Which Keptn name is being checked; used to word the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A Keptn project.
    Project,
    /// A stage of a project.
    Stage,
    /// A service of a project.
    Service,
}

impl NameKind {
    /// The lower-case word used in messages and in the event's `data`.
    pub const fn as_str(self) -> &'static str {
        match self {
            NameKind::Project => "project",
            NameKind::Stage => "stage",
            NameKind::Service => "service",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Keptn name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is absent or empty.
    #[error("{kind} name is missing")]
    Missing {
        /// Which name.
        kind: NameKind,
    },
    /// The name does not match `^[a-z][a-z0-9-]*[a-z0-9]$` (or a single lower-case letter).
    #[error(
        "{kind} name {} is invalid: must start with a lower-case letter, contain only \
         lower-case letters, digits and '-', and end with a letter or digit",
        crate::quoted(value)
    )]
    Invalid {
        /// Which name.
        kind: NameKind,
        /// The rejected value.
        value: String,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error(
        "{kind} name {} is invalid: it has {len} characters, at most {max} are allowed \
         because it becomes part of a Kubernetes namespace",
        crate::quoted(value),
        max = MAX_NAME_LEN
    )]
    TooLong {
        /// Which name.
        kind: NameKind,
        /// The rejected value.
        value: String,
        /// Its length in characters.
        len: usize,
    },
    /// Project and stage are valid alone but `<project>-<stage>` is too long for a namespace.
    #[error(
        "namespace {} (<project>-<stage>) has {len} characters, at most {max} are \
         allowed by Kubernetes: use a shorter project or stage name",
        crate::quoted(namespace),
        max = MAX_NAME_LEN
    )]
    NamespaceTooLong {
        /// The namespace that would have been built.
        namespace: String,
        /// Its length in characters.
        len: usize,
    },
}

/// Checks a Keptn project, stage or service name.
///
/// Rule: `^[a-z][a-z0-9-]*[a-z0-9]$`, or a single lower-case letter, at most
/// [`MAX_NAME_LEN`] characters.
pub fn validate_keptn_name(kind: NameKind, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Missing { kind });
    }
    let bytes = value.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase();
    let last = bytes[bytes.len() - 1];
    let last_ok = last.is_ascii_lowercase() || last.is_ascii_digit();
    let body_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !(first_ok && last_ok && body_ok) {
        return Err(NameError::Invalid {
            kind,
            value: value.to_owned(),
        });
    }
    // Only ASCII is left at this point, so bytes are characters.
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

/// Builds the Kubernetes namespace `<project>-<stage>` after checking both names and the
/// combined length.
pub fn namespace(project: &str, stage: &str) -> Result<String, NameError> {
    validate_keptn_name(NameKind::Project, project)?;
    validate_keptn_name(NameKind::Stage, stage)?;
    let namespace = format!("{project}-{stage}");
    if namespace.len() > MAX_NAME_LEN {
        let len = namespace.len();
        return Err(NameError::NamespaceTooLong { namespace, len });
    }
    Ok(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_keptn_names() {
        for name in [
            "a",
            "z",
            "carts",
            "carts-db",
            "sockshop2",
            "a1",
            "a-1",
            &"a".repeat(63),
        ] {
            assert_eq!(
                validate_keptn_name(NameKind::Service, name),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "Carts", "cArts", "carts_1", "1carts", "-carts", "carts-", "car ts", "carts.db", "1",
            "-", "A", "é", "carts\n", "ca/rts", "..",
        ] {
            assert!(
                matches!(
                    validate_keptn_name(NameKind::Service, name),
                    Err(NameError::Invalid { .. })
                ),
                "{name:?} should be invalid"
            );
        }
    }

    #[test]
    fn missing_and_too_long() {
        assert_eq!(
            validate_keptn_name(NameKind::Stage, ""),
            Err(NameError::Missing {
                kind: NameKind::Stage
            })
        );
        assert_eq!(
            validate_keptn_name(NameKind::Stage, "")
                .unwrap_err()
                .to_string(),
            "stage name is missing"
        );
        let long = "a".repeat(64);
        let err = validate_keptn_name(NameKind::Project, &long).unwrap_err();
        assert!(matches!(err, NameError::TooLong { len: 64, .. }), "{err:?}");
        assert!(err.to_string().contains("at most 63"), "{err}");
    }

    #[test]
    fn message_is_actionable() {
        assert_eq!(
            validate_keptn_name(NameKind::Service, "Carts_1")
                .unwrap_err()
                .to_string(),
            "service name \"Carts_1\" is invalid: must start with a lower-case letter, contain \
             only lower-case letters, digits and '-', and end with a letter or digit"
        );
        assert_eq!(NameKind::Project.to_string(), "project");
    }

    #[test]
    fn namespace_is_checked() {
        assert_eq!(namespace("sockshop", "dev").unwrap(), "sockshop-dev");
        assert!(matches!(
            namespace("Sockshop", "dev"),
            Err(NameError::Invalid {
                kind: NameKind::Project,
                ..
            })
        ));
        assert!(matches!(
            namespace("sockshop", ""),
            Err(NameError::Missing {
                kind: NameKind::Stage
            })
        ));
        let err = namespace(&"p".repeat(40), &"s".repeat(23)).unwrap_err();
        assert!(
            matches!(err, NameError::NamespaceTooLong { len: 64, .. }),
            "{err:?}"
        );
        assert!(namespace(&"p".repeat(40), &"s".repeat(22)).is_ok());
    }
}
