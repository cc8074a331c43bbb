//! The authorization decision over a set of bindings ([`AclIndex`], immutable: a cache swaps
//! in a new one when the stored bindings change) and the super users who bypass it.

use std::collections::{HashMap, HashSet};

use crate::error::AclError;
use crate::model::{AclBinding, Operation, PatternType, Permission, ResourceType, parse_principal};
use crate::{WILDCARD, WILDCARD_PRINCIPAL};

/// Who asks and from where.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    /// `User:name` (the authenticated principal, or [`crate::ANONYMOUS`]).
    pub principal: &'a str,
    /// The client's IP address as text (`127.0.0.1`).
    pub host: &'a str,
}

/// The principals allowed everything (Kafka's `super.users`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuperUsers(HashSet<String>);

impl SuperUsers {
    /// Parses Kafka's `super.users` syntax: principals separated by `;` (a principal may hold
    /// commas: `User:CN=admin,O=example`), blanks around each ignored.
    pub fn parse(list: &str) -> Result<Self, AclError> {
        let mut users = HashSet::new();
        for principal in list.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            parse_principal(principal)?;
            users.insert(principal.to_string());
        }
        Ok(SuperUsers(users))
    }

    pub fn contains(&self, principal: &str) -> bool {
        self.0.contains(principal)
    }
}

/// Every binding, indexed for the decision: literal bindings by type and name, prefixed ones
/// by type (there are few; each check walks them).
#[derive(Debug, Clone, Default)]
pub struct AclIndex {
    bindings: Vec<AclBinding>,
    literal: HashMap<(ResourceType, String), Vec<usize>>,
    prefixed: HashMap<ResourceType, Vec<usize>>,
}

impl AclIndex {
    pub fn new(bindings: Vec<AclBinding>) -> Self {
        let mut literal: HashMap<_, Vec<usize>> = HashMap::new();
        let mut prefixed: HashMap<_, Vec<usize>> = HashMap::new();
        for (i, b) in bindings.iter().enumerate() {
            match b.pattern {
                PatternType::Literal => literal
                    .entry((b.resource_type, b.resource_name.clone()))
                    .or_default()
                    .push(i),
                PatternType::Prefixed => prefixed.entry(b.resource_type).or_default().push(i),
            }
        }
        AclIndex {
            bindings,
            literal,
            prefixed,
        }
    }

    /// Every binding, in no particular order.
    pub fn bindings(&self) -> &[AclBinding] {
        &self.bindings
    }

    /// Whether `session` may perform `operation` on the resource `resource_type`/`name`: no
    /// matching DENY, and a matching ALLOW (see the crate documentation). Super users are
    /// checked by the caller ([`SuperUsers`]) so that this stays a function of the bindings.
    pub fn authorize(
        &self,
        session: &Session<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let applicable: Vec<&AclBinding> = self
            .matching(resource_type, name)
            .filter(|b| applies_to(b, session))
            .collect();
        let denied = applicable
            .iter()
            .any(|b| b.permission == Permission::Deny && b.operation.denies(operation));
        !denied
            && applicable
                .iter()
                .any(|b| b.permission == Permission::Allow && b.operation.allows(operation))
    }

    /// Whether `session` may perform `operation` on at least one resource of `resource_type`
    /// (Kafka's `authorizeByResourceType`, which InitProducerId uses: WRITE on any topic
    /// implies IDEMPOTENT_WRITE). Some ALLOW must not be cancelled by a DENY covering it: a
    /// literal `*` DENY cancels everything, a literal DENY the same literal ALLOW, a prefixed
    /// DENY every ALLOW whose name (or prefix) starts with it.
    pub fn authorize_by_type(
        &self,
        session: &Session<'_>,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let of_type = self
            .bindings
            .iter()
            .filter(|b| b.resource_type == resource_type && applies_to(b, session));
        let (deny, allow): (Vec<&AclBinding>, Vec<&AclBinding>) = of_type
            .filter(|b| b.operation.denies(operation))
            .partition(|b| b.permission == Permission::Deny);
        let denied_prefix = |name: &str| {
            deny.iter()
                .any(|d| d.pattern == PatternType::Prefixed && name.starts_with(&d.resource_name))
        };
        let denied_literal = |name: &str| {
            deny.iter()
                .any(|d| d.pattern == PatternType::Literal && d.resource_name == name)
        };
        if denied_literal(WILDCARD) {
            return false;
        }
        allow.iter().any(|a| match a.pattern {
            PatternType::Literal if a.resource_name == WILDCARD => true,
            PatternType::Literal => {
                !denied_literal(&a.resource_name) && !denied_prefix(&a.resource_name)
            }
            PatternType::Prefixed => !denied_prefix(&a.resource_name),
        })
    }

    /// The bindings whose resource pattern covers `resource_type`/`name`.
    fn matching<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = |n: &str| {
            self.literal
                .get(&(resource_type, n.to_string()))
                .into_iter()
                .flatten()
        };
        let wildcard = if name == WILDCARD {
            None
        } else {
            Some(literal(WILDCARD))
        };
        let prefixed = self
            .prefixed
            .get(&resource_type)
            .into_iter()
            .flatten()
            .filter(move |&&i| name.starts_with(&self.bindings[i].resource_name));
        literal(name)
            .chain(wildcard.into_iter().flatten())
            .chain(prefixed)
            .map(|&i| &self.bindings[i])
    }
}

/// Whether a binding names the session's principal (or every user) and host (or every host).
fn applies_to(binding: &AclBinding, session: &Session<'_>) -> bool {
    (binding.principal == session.principal || binding.principal == WILDCARD_PRINCIPAL)
        && (binding.host == session.host || binding.host == WILDCARD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ANONYMOUS;

    const ALICE: Session<'static> = Session {
        principal: "User:alice",
        host: "10.0.0.1",
    };

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn topic(name: &str, op: Operation, perm: Permission) -> AclBinding {
        acl(
            ResourceType::Topic,
            name,
            PatternType::Literal,
            "User:alice",
            op,
            perm,
        )
    }

    fn allows(index: &AclIndex, op: Operation, name: &str) -> bool {
        index.authorize(&ALICE, op, ResourceType::Topic, name)
    }

    #[test]
    fn nothing_is_allowed_without_an_allow() {
        let index = AclIndex::new(vec![]);
        assert!(!allows(&index, Operation::Read, "orders"));
        let other = AclIndex::new(vec![acl(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:bob",
            Operation::All,
            Permission::Allow,
        )]);
        assert!(!allows(&other, Operation::Read, "orders"));
    }

    #[test]
    fn literal_allow_is_for_its_name_and_operation() {
        let index = AclIndex::new(vec![topic("orders", Operation::Write, Permission::Allow)]);
        assert!(allows(&index, Operation::Write, "orders"));
        assert!(!allows(&index, Operation::Read, "orders"));
        assert!(!allows(&index, Operation::Write, "orders2"));
        assert!(!index.authorize(&ALICE, Operation::Write, ResourceType::Group, "orders"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let index = AclIndex::new(vec![
            acl(
                ResourceType::Topic,
                "*",
                PatternType::Literal,
                "User:*",
                Operation::All,
                Permission::Allow,
            ),
            topic("secret", Operation::Read, Permission::Deny),
        ]);
        assert!(allows(&index, Operation::Read, "public"));
        assert!(!allows(&index, Operation::Read, "secret"));
        assert!(allows(&index, Operation::Write, "secret"));
        let deny_all = AclIndex::new(vec![
            topic("secret", Operation::Read, Permission::Allow),
            topic("secret", Operation::All, Permission::Deny),
        ]);
        assert!(!allows(&deny_all, Operation::Read, "secret"));
    }

    #[test]
    fn prefixed_and_wildcard_patterns() {
        let index = AclIndex::new(vec![
            acl(
                ResourceType::Topic,
                "team-a.",
                PatternType::Prefixed,
                "User:alice",
                Operation::Read,
                Permission::Allow,
            ),
            acl(
                ResourceType::Group,
                "*",
                PatternType::Literal,
                "User:alice",
                Operation::Read,
                Permission::Allow,
            ),
        ]);
        assert!(allows(&index, Operation::Read, "team-a.orders"));
        assert!(allows(&index, Operation::Read, "team-a."));
        assert!(!allows(&index, Operation::Read, "team-b.orders"));
        assert!(index.authorize(&ALICE, Operation::Read, ResourceType::Group, "any-group"));
        // `*` as a prefix is a literal character, not a wildcard.
        let star_prefix = AclIndex::new(vec![acl(
            ResourceType::Topic,
            "*",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
            Permission::Allow,
        )]);
        assert!(!allows(&star_prefix, Operation::Read, "orders"));
    }

    #[test]
    fn implied_operations() {
        let read = AclIndex::new(vec![topic("t", Operation::Read, Permission::Allow)]);
        assert!(allows(&read, Operation::Describe, "t"));
        for op in [Operation::Write, Operation::Delete, Operation::Alter] {
            let index = AclIndex::new(vec![topic("t", op, Permission::Allow)]);
            assert!(allows(&index, Operation::Describe, "t"), "{op:?}");
        }
        let alter_configs =
            AclIndex::new(vec![topic("t", Operation::AlterConfigs, Permission::Allow)]);
        assert!(allows(&alter_configs, Operation::DescribeConfigs, "t"));
        assert!(!allows(&alter_configs, Operation::Describe, "t"));
        let describe = AclIndex::new(vec![topic("t", Operation::Describe, Permission::Allow)]);
        assert!(!allows(&describe, Operation::Read, "t"));
        // A DENY of READ does not deny DESCRIBE (no implication for denials).
        let deny_read = AclIndex::new(vec![
            topic("t", Operation::Describe, Permission::Allow),
            topic("t", Operation::Read, Permission::Deny),
        ]);
        assert!(allows(&deny_read, Operation::Describe, "t"));
    }

    #[test]
    fn principal_and_host() {
        let mut from_host = topic("t", Operation::Read, Permission::Allow);
        from_host.host = "10.0.0.2".into();
        let index = AclIndex::new(vec![from_host]);
        assert!(!allows(&index, Operation::Read, "t"));
        let other_host = Session {
            principal: "User:alice",
            host: "10.0.0.2",
        };
        assert!(index.authorize(&other_host, Operation::Read, ResourceType::Topic, "t"));

        let everyone = AclIndex::new(vec![acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:*",
            Operation::Read,
            Permission::Allow,
        )]);
        let anonymous = Session {
            principal: ANONYMOUS,
            host: "127.0.0.1",
        };
        assert!(everyone.authorize(&anonymous, Operation::Read, ResourceType::Topic, "t"));
        assert!(
            !AclIndex::new(vec![topic("t", Operation::Read, Permission::Allow)]).authorize(
                &anonymous,
                Operation::Read,
                ResourceType::Topic,
                "t"
            )
        );
    }

    #[test]
    fn super_users_parse_kafka_syntax() {
        let users = SuperUsers::parse("User:admin; User:CN=ops,O=example ;").unwrap();
        assert!(users.contains("User:admin"));
        assert!(users.contains("User:CN=ops,O=example"));
        assert!(!users.contains("User:alice"));
        assert!(!users.contains(ANONYMOUS));
        assert!(SuperUsers::parse("admin").is_err());
        assert_eq!(SuperUsers::parse("").unwrap(), SuperUsers::default());
    }

    #[test]
    fn by_type_finds_an_uncancelled_allow() {
        let by_type = |bindings| {
            AclIndex::new(bindings).authorize_by_type(&ALICE, Operation::Write, ResourceType::Topic)
        };
        let prefixed = |name: &str, perm| {
            acl(
                ResourceType::Topic,
                name,
                PatternType::Prefixed,
                "User:alice",
                Operation::Write,
                perm,
            )
        };
        assert!(!by_type(vec![]));
        assert!(by_type(vec![topic(
            "t",
            Operation::Write,
            Permission::Allow
        )]));
        assert!(by_type(vec![topic("t", Operation::All, Permission::Allow)]));
        assert!(!by_type(vec![topic(
            "t",
            Operation::Read,
            Permission::Allow
        )]));
        assert!(!by_type(vec![
            topic("t", Operation::Write, Permission::Allow),
            topic("t", Operation::Write, Permission::Deny),
        ]));
        assert!(by_type(vec![
            topic("t", Operation::Write, Permission::Allow),
            topic("u", Operation::Write, Permission::Deny),
        ]));
        assert!(!by_type(vec![
            topic("t", Operation::Write, Permission::Allow),
            topic("*", Operation::Write, Permission::Deny),
        ]));
        assert!(!by_type(vec![
            prefixed("team-a.x", Permission::Allow),
            prefixed("team-a.", Permission::Deny),
        ]));
        assert!(by_type(vec![
            prefixed("team-a.", Permission::Allow),
            prefixed("team-a.x", Permission::Deny),
        ]));
    }

    #[test]
    fn bindings_from_the_wire_are_checked() {
        let ok = AclBinding::from_wire(2, "t", 3, "User:alice", "*", 3, 3).unwrap();
        assert_eq!(ok.operation, Operation::Read);
        assert!(AclBinding::from_wire(1, "t", 3, "User:alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 2, "User:alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "", 3, "User:alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "User:alice", "*", 1, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "User:alice", "*", 3, 1).is_err());
        assert!(AclBinding::from_wire(4, "c", 3, "User:alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(4, "kafka-cluster", 3, "User:a", "*", 7, 3).is_ok());
    }
}
