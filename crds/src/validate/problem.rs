//! What validation reports: a severity, a stable code, the field path and a message.

use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Error,
    Warn,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "ERROR",
            Self::Warn => "WARN",
        })
    }
}

macro_rules! codes {
    ($($code:ident: $doc:literal),* $(,)?) => {
        /// Stable identifiers for every kind of problem, so tools can filter on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum Code {
            $(#[doc = $doc] $code),*
        }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$code),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$code => stringify!($code)),* }
            }

            pub fn description(self) -> &'static str {
                match self { $(Self::$code => $doc),* }
            }
        }
    };
}

codes! {
    SchemaError: "the document does not fit the resource's schema (wrong type, malformed YAML)",
    UnknownField: "a field the resource does not define (often a typo)",
    UnknownEnumValue: "a value outside a closed set, such as a TLS mode or load-balancer name",
    MissingField: "a required field is absent or empty",
    ConflictingFields: "fields that exclude each other are set together",
    InvalidWeight: "route weights are negative or do not add up to 100",
    InvalidPercentage: "a percentage outside 0 to 100",
    InvalidStatusCode: "an HTTP status code outside 100 to 599, or a gRPC status outside 0 to 16",
    InvalidDuration: "a duration that is zero, negative or out of range where that is not allowed",
    InvalidRegex: "a regular expression that the proxy's engine cannot compile",
    InvalidHost: "a host name or wildcard that Istio does not accept",
    InvalidPort: "a port number outside 1 to 65535, or a duplicate port",
    InvalidSelector: "a label selector with invalid keys or values",
    InvalidValue: "a value of the right type but outside what is allowed",
    DuplicateSubset: "two subsets of one DestinationRule share a name",
    DuplicateResource: "two documents define the same kind, namespace and name",
    ReferencedResourceNotFound: "a host, gateway or other object referenced by name is not in the input",
    UnknownSubset: "a route names a subset that no DestinationRule for its host defines",
    NotSupported: "valid Istio that Mizzen does not implement",
    Deprecated: "an older spelling that still works; its current form is named",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one object, at one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub code: Code,
    /// Dotted field path, e.g. `spec.http[0].route[1].weight`; empty for the whole object.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn error(code: Code, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warn(code: Code, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warn,
            code,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    /// `spec.http[0].route[1].weight: weights ... (got 110)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
