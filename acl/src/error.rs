//! Errors of this crate: every one is a request that cannot be valid (Kafka's
//! `INVALID_REQUEST`), never a transient failure.

/// Why an ACL binding or filter from a client is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// A field holds a code that is unknown, or not allowed where it is (ANY in a binding).
    #[error("invalid {field} code {code}")]
    InvalidCode { field: &'static str, code: i8 },
    /// The principal is not `Type:name`.
    #[error("invalid principal {0:?}: expected Type:name, such as User:alice")]
    InvalidPrincipal(String),
    /// Any other rule a binding breaks.
    #[error("invalid ACL binding: {0}")]
    InvalidBinding(&'static str),
}

impl AclError {
    /// Never: a request with an invalid binding fails the same way when repeated.
    pub fn is_retryable(&self) -> bool {
        match self {
            AclError::InvalidCode { .. }
            | AclError::InvalidPrincipal(_)
            | AclError::InvalidBinding(_) => false,
        }
    }
}
