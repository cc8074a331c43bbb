//! Authorization with Kafka ACLs: the bindings in the metadata store ([`store`]), their cached
//! copy on every gateway ([`cache`]), the decision for one request ([`authorizer`]), the Kafka
//! APIs that manage them ([`acl_api`]) and the layer that enforces them on every API
//! ([`enforce`]). The model and the matching rules are the `kafscale-acl` crate's. Off unless
//! `--acl-enabled`: then nothing of this module is in the request path.

pub mod acl_api;
pub mod authorizer;
pub mod cache;
pub mod enforce;
mod groups;
pub mod store;
mod topics;

pub use acl_api::{ACL_APIS, AclHandler};
pub use authorizer::{Authorizer, RequestAuthz};
pub use cache::AclCache;
pub use enforce::{AUTHORIZED_APIS, AuthorizingHandler};
pub use store::AclStore;
