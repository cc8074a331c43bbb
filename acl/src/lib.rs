//! Kafka ACLs (authorization): the binding model, the filters of DescribeAcls/DeleteAcls and the
//! decision of whether a principal may perform an operation on a resource.
//!
//! Why a crate of its own: the decision is a pure function of the bindings, the super users and
//! the request's principal and host, so its rules (Kafka's `AclAuthorizer` /
//! `StandardAuthorizer` semantics) are unit-tested here with no store, wire protocol or cache
//! around them. `kafscale-shared` keeps the bindings in the metadata store, caches them on every
//! gateway ([`AclIndex`] is the cached form), serves the ACL APIs and enforces the decisions.
//! This crate depends on no other kafscale crate.
//!
//! The rules, as Kafka's:
//! - a super user may do anything; a request with no authenticated principal is
//!   [`ANONYMOUS`];
//! - a binding matches a resource when its pattern is LITERAL and its name equals the resource
//!   name or is `*`, or its pattern is PREFIXED and the resource name starts with it; it matches
//!   the request when its principal is the request's or `User:*`, and its host is the client's
//!   address or `*`;
//! - a matching DENY for the operation (or for ALL) refuses, whatever else allows;
//! - else a matching ALLOW for the operation, for ALL, or for an operation that implies it
//!   (DESCRIBE is implied by READ, WRITE, DELETE and ALTER; DESCRIBE_CONFIGS by ALTER_CONFIGS)
//!   permits; with no such ALLOW the answer is no (deny by default).

mod error;
mod filter;
mod index;
mod model;

pub use error::AclError;
pub use filter::{AclBindingFilter, PatternFilter};
pub use index::{AclIndex, Session, SuperUsers};
pub use model::{
    AclBinding, MAX_FIELD_BYTES, Operation, PatternType, Permission, ResourceType, parse_principal,
};

/// The principal of a request that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// The principal of a binding that applies to every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host of a binding that applies to every client address, and the literal resource name
/// that matches every resource of its type.
pub const WILDCARD: &str = "*";
/// The only name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
