//! ACL bindings and their parts, with Kafka's wire codes (`AclOperation`, `ResourceType`,
//! `PatternType`, `AclPermissionType`) and stable names for storage (Kafka's own spelling).

use serde::{Deserialize, Serialize};

use crate::error::AclError;
use crate::{CLUSTER_NAME, WILDCARD};

/// The kinds of resource an ACL can name (Kafka codes 2-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ];

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    /// The type of a Kafka code; `None` for UNKNOWN, ANY and types kafscale has no such
    /// resource of (delegation tokens, users).
    pub fn from_code(code: i8) -> Option<Self> {
        ResourceType::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// How a binding's resource name matches resource names (Kafka codes 3-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatternType {
    /// The name itself, or every resource of the type when it is `*`.
    Literal,
    /// Every resource whose name starts with it.
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// What a request does to a resource (Kafka codes 2-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Every operation (only in bindings; no request asks for it).
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    pub fn code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    /// The operation of a Kafka code; `None` for UNKNOWN, ANY and the delegation-token ones.
    pub fn from_code(code: i8) -> Option<Self> {
        Operation::ALL.into_iter().find(|o| o.code() == code)
    }

    /// Whether an ALLOW binding for `self` permits `requested`: the same operation, ALL, or
    /// one of Kafka's implications (READ, WRITE, DELETE and ALTER imply DESCRIBE;
    /// ALTER_CONFIGS implies DESCRIBE_CONFIGS).
    pub fn allows(self, requested: Operation) -> bool {
        self == requested
            || self == Operation::All
            || match requested {
                Operation::Describe => matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ),
                Operation::DescribeConfigs => self == Operation::AlterConfigs,
                _ => false,
            }
    }

    /// Whether a DENY binding for `self` refuses `requested` (no implications, as Kafka).
    pub fn denies(self, requested: Operation) -> bool {
        self == requested || self == Operation::All
    }
}

/// Whether a binding allows or denies (Kafka codes 2-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL: `permission` for `principal` from `host` to do `operation` on the resources
/// `resource_type`/`resource_name`/`pattern` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Longest resource name, principal or host a binding may hold (they are stored in items and
/// compared on every request; Kafka's own names are far shorter).
pub const MAX_FIELD_BYTES: usize = 4096;

impl AclBinding {
    /// A binding from the codes and strings of a CreateAcls creation, checked as Kafka checks
    /// them: no UNKNOWN or ANY codes, a `Type:name` principal, a non-empty resource name, and
    /// `kafka-cluster` as the only CLUSTER name.
    pub fn from_wire(
        resource_type: i8,
        resource_name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, AclError> {
        let invalid = |field, code| AclError::InvalidCode { field, code };
        let binding = AclBinding {
            resource_type: ResourceType::from_code(resource_type)
                .ok_or(invalid("resource type", resource_type))?,
            resource_name: resource_name.to_string(),
            pattern: PatternType::from_code(pattern).ok_or(invalid("pattern type", pattern))?,
            principal: principal.to_string(),
            host: host.to_string(),
            operation: Operation::from_code(operation).ok_or(invalid("operation", operation))?,
            permission: Permission::from_code(permission)
                .ok_or(invalid("permission type", permission))?,
        };
        binding.validate()?;
        Ok(binding)
    }

    /// Checks the string fields (see [`AclBinding::from_wire`]).
    pub fn validate(&self) -> Result<(), AclError> {
        parse_principal(&self.principal)?;
        if self.resource_name.is_empty() {
            return Err(AclError::InvalidBinding("empty resource name"));
        }
        if self.host.is_empty() {
            return Err(AclError::InvalidBinding("empty host"));
        }
        let longest = [&self.resource_name, &self.principal, &self.host]
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(0);
        if longest > MAX_FIELD_BYTES {
            return Err(AclError::InvalidBinding(
                "a field is longer than 4096 bytes",
            ));
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(AclError::InvalidBinding(
                "the only valid name for the CLUSTER resource is kafka-cluster",
            ));
        }
        Ok(())
    }

    /// Whether this binding's resource pattern covers the resource `name` of its type.
    pub fn matches_resource(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }
}

/// Splits a principal `Type:name` (Kafka's `KafkaPrincipal` string form) into its parts.
pub fn parse_principal(principal: &str) -> Result<(&str, &str), AclError> {
    match principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok((kind, name)),
        _ => Err(AclError::InvalidPrincipal(principal.to_string())),
    }
}
