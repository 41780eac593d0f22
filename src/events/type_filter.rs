//! Event type filters as clients write them: exact names (`payment.completed`)
//! and `*` suffix wildcards (`ticket.*`, `ticket*`, `*`). Used by the live
//! feeds and by webhook endpoints.

use std::fmt;

use super::envelope::EventType;

/// One pattern of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    /// `*`: every type.
    Any,
    /// `ticket.*` or `ticket*`: every type starting with the prefix (kept
    /// with its dot, if it had one).
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an event type filter: use a type such as `ticket.created`, a prefix wildcard such as `ticket.*`, or `*`"
)]
pub struct TypePatternError(pub String);

impl TypePattern {
    pub fn parse(raw: &str) -> Result<Self, TypePatternError> {
        let raw = raw.trim();
        let invalid = || TypePatternError(raw.chars().take(100).collect());
        if raw == "*" {
            return Ok(Self::Any);
        }
        match raw.strip_suffix('*') {
            Some(prefix) => {
                let name = prefix.strip_suffix('.').unwrap_or(prefix);
                EventType::parse(name).map_err(|_| invalid())?;
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None => {
                EventType::parse(raw).map_err(|_| invalid())?;
                Ok(Self::Exact(raw.to_owned()))
            }
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::Exact(name) => event_type == name,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(name) => f.write_str(name),
        }
    }
}

/// Any of several patterns; no pattern at all means every type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    patterns: Vec<TypePattern>,
}

/// Patterns in one filter, at most.
pub const MAX_PATTERNS: usize = 100;

impl TypeFilter {
    /// Every type.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn parse<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Self, TypePatternError> {
        let mut patterns = Vec::new();
        for one in raw {
            if patterns.len() == MAX_PATTERNS {
                return Err(TypePatternError(format!(
                    "more than {MAX_PATTERNS} patterns"
                )));
            }
            let pattern = TypePattern::parse(one)?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(Self { patterns })
    }

    /// A comma-separated list (`ticket.*,payment.completed`).
    pub fn parse_list(raw: &str) -> Result<Self, TypePatternError> {
        Self::parse(raw.split(',').filter(|s| !s.trim().is_empty()))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(event_type))
    }

    pub fn patterns(&self) -> &[TypePattern] {
        &self.patterns
    }

    /// The patterns as clients wrote them (`*` when empty).
    pub fn to_strings(&self) -> Vec<String> {
        if self.patterns.is_empty() {
            return vec!["*".to_owned()];
        }
        self.patterns.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_prefixes_and_exact_names_match_only_themselves() {
        let filter = TypeFilter::parse(["ticket.*", "payment.completed"]).unwrap();
        assert!(filter.matches("ticket.created"));
        assert!(filter.matches("ticket.message_added"));
        assert!(filter.matches("payment.completed"));
        assert!(!filter.matches("payment.created"));
        assert!(!filter.matches("tickets.x"));
        assert!(!filter.matches("user.created"));
        let filter = TypeFilter::parse(["ticket*"]).unwrap();
        assert!(filter.matches("ticket.created"));
        assert!(TypeFilter::parse(["*"]).unwrap().matches("anything.at_all"));
        assert!(TypeFilter::all().matches("user.created"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "",
            "Ticket.*",
            "ticket.**",
            "*.created",
            "ticket created",
            "a..b",
        ] {
            assert!(TypePattern::parse(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("t{i}.x")).collect();
        assert!(TypeFilter::parse(many.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn a_comma_separated_list_parses_and_prints_back() {
        let filter = TypeFilter::parse_list("ticket.*, payment.completed,").unwrap();
        assert_eq!(filter.to_strings(), ["ticket.*", "payment.completed"]);
        assert_eq!(TypeFilter::all().to_strings(), ["*"]);
    }
}
