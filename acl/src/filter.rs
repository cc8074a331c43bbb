//! The filters of DescribeAcls and DeleteAcls, with Kafka's semantics: every field may be ANY
//! (a null string, or code 1), and the pattern filter MATCH selects the bindings that would
//! apply to the named resource (its literal binding, the `*` binding and every prefix of it).

use crate::WILDCARD;
use crate::error::AclError;
use crate::model::{AclBinding, Operation, PatternType, Permission, ResourceType};

/// Kafka's code for ANY in every enum of a filter.
const ANY: i8 = 1;
/// Kafka's pattern-type code for MATCH.
const MATCH: i8 = 2;

/// Which resource patterns a filter selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type; a given name must equal the binding's name.
    Any,
    /// The bindings that apply to the given name (every binding when no name is given).
    Match,
    /// This pattern type only.
    Exactly(PatternType),
}

/// `None` for ANY, else the value of a defined code.
fn any_or<T>(
    code: i8,
    field: &'static str,
    parse: fn(i8) -> Option<T>,
) -> Result<Option<T>, AclError> {
    match code {
        ANY => Ok(None),
        _ => parse(code)
            .map(Some)
            .ok_or(AclError::InvalidCode { field, code }),
    }
}

/// A filter over ACL bindings; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclBindingFilter {
    /// A filter from the codes and strings of a DescribeAcls request or DeleteAcls filter;
    /// UNKNOWN (or any code Kafka does not define) is invalid, as in Kafka.
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self, AclError> {
        let invalid = |field, code| AclError::InvalidCode { field, code };
        Ok(AclBindingFilter {
            resource_type: any_or(resource_type, "resource type", ResourceType::from_code)?,
            resource_name: resource_name.map(str::to_string),
            pattern: match pattern {
                ANY => PatternFilter::Any,
                MATCH => PatternFilter::Match,
                _ => PatternFilter::Exactly(
                    PatternType::from_code(pattern).ok_or(invalid("pattern type", pattern))?,
                ),
            },
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: any_or(operation, "operation", Operation::from_code)?,
            permission: any_or(permission, "permission type", Permission::from_code)?,
        })
    }

    /// A filter that selects every binding.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether the filter selects `binding`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        fn field<T: PartialEq>(filter: &Option<T>, value: &T) -> bool {
            filter.as_ref().is_none_or(|f| f == value)
        }
        field(&self.resource_type, &binding.resource_type)
            && self.matches_pattern(binding)
            && field(&self.principal, &binding.principal)
            && field(&self.host, &binding.host)
            && field(&self.operation, &binding.operation)
            && field(&self.permission, &binding.permission)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        let name = self.resource_name.as_deref();
        match self.pattern {
            PatternFilter::Any => name.is_none_or(|n| n == binding.resource_name),
            PatternFilter::Exactly(p) => {
                p == binding.pattern && name.is_none_or(|n| n == binding.resource_name)
            }
            PatternFilter::Match => name.is_none_or(|n| match binding.pattern {
                PatternType::Literal => {
                    binding.resource_name == n || binding.resource_name == WILDCARD
                }
                PatternType::Prefixed => n.starts_with(&binding.resource_name),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    fn filter(name: Option<&str>, pattern: i8) -> AclBindingFilter {
        AclBindingFilter::from_wire(2, name, pattern, None, None, ANY, ANY).unwrap()
    }

    #[test]
    fn any_and_exact_patterns_compare_names() {
        let literal = binding("orders", PatternType::Literal);
        let prefixed = binding("ord", PatternType::Prefixed);
        assert!(filter(Some("orders"), ANY).matches(&literal));
        assert!(!filter(Some("orders"), ANY).matches(&prefixed));
        assert!(filter(None, ANY).matches(&prefixed));
        assert!(filter(Some("ord"), 4).matches(&prefixed));
        assert!(!filter(Some("ord"), 3).matches(&prefixed));
        assert!(!filter(Some("orders"), 4).matches(&literal));
    }

    #[test]
    fn match_selects_every_binding_that_applies_to_the_name() {
        let f = filter(Some("orders"), MATCH);
        assert!(f.matches(&binding("orders", PatternType::Literal)));
        assert!(f.matches(&binding("*", PatternType::Literal)));
        assert!(f.matches(&binding("ord", PatternType::Prefixed)));
        assert!(!f.matches(&binding("ord", PatternType::Literal)));
        assert!(!f.matches(&binding("orders-x", PatternType::Prefixed)));
        assert!(filter(None, MATCH).matches(&binding("x", PatternType::Prefixed)));
    }

    #[test]
    fn other_fields_and_invalid_codes() {
        let b = binding("orders", PatternType::Literal);
        let by = |p: Option<&str>, op: i8, perm: i8| {
            AclBindingFilter::from_wire(ANY, None, ANY, p, None, op, perm).unwrap()
        };
        assert!(by(Some("User:alice"), 3, 3).matches(&b));
        assert!(!by(Some("User:bob"), ANY, ANY).matches(&b));
        assert!(!by(None, 4, ANY).matches(&b));
        assert!(!by(None, ANY, 2).matches(&b));
        assert!(AclBindingFilter::any().matches(&b));
        for (rt, pt, op, perm) in [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)] {
            assert!(AclBindingFilter::from_wire(rt, None, pt, None, None, op, perm).is_err());
        }
        assert!(AclBindingFilter::from_wire(7, None, 1, None, None, 1, 1).is_err());
    }
}
