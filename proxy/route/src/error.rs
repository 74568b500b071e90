//! Why a config could not be compiled into a [`RouteTable`](crate::RouteTable).

use std::fmt;

/// A config the engine cannot act on, naming the service, the route and the field, e.g.
/// `service reviews.default.svc.cluster.local route default/reviews/0 matches[1].headers[cookie]: invalid regex ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// Host of the service whose config is wrong.
    pub service: String,
    /// Name of the route, when the problem is inside one.
    pub route: Option<String>,
    /// Path of the field inside the route (or the service), e.g. `matches[1].uri`.
    pub field: String,
    /// What is wrong, with the value seen.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(
        service: &str,
        route: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            service: service.to_string(),
            route: route.map(str::to_string),
            field: field.into(),
            message: message.into(),
        }
    }

    /// An invalid regular expression, with the regex crate's reason (its last line).
    pub(crate) fn regex(
        service: &str,
        route: Option<&str>,
        field: impl Into<String>,
        pattern: &str,
        err: &regex::Error,
    ) -> Self {
        let reason = err.to_string();
        let reason = reason
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or(&reason)
            .trim()
            .to_string();
        Self::new(
            service,
            route,
            field,
            format!("invalid regex {pattern:?}: {reason}"),
        )
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}", self.service)?;
        if let Some(route) = &self.route {
            write!(f, " route {route}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, " {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for CompileError {}
