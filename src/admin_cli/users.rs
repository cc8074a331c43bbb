//! `kafscale admin users list|set|delete`: the SCRAM users SASL clients log in as, through the
//! admin API's `/v1/users`.
//!
//! The password is read from an environment variable or a file, never from the command line
//! (argv is visible to every user of the machine in the process list), and sent once in the
//! request body; the server salts it and keeps only the derived keys.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::client::{AdminClient, segment};
use super::table::Table;
use super::{Conn, Output, connect, show};
use crate::admin_api::users::{CredentialInfo, UserList};

/// Both SCRAM mechanisms, the default of `set` and `delete`.
const MECHANISMS: [&str; 2] = ["SCRAM-SHA-512", "SCRAM-SHA-256"];

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UsersCommand {
    /// Every user with its mechanisms and iteration counts.
    List,
    /// Create a user or set its password: one SCRAM credential per mechanism (PLAIN logins
    /// check either).
    #[command(group(clap::ArgGroup::new("password").required(true).args(["password_env", "password_file"])))]
    Set {
        name: String,
        /// Name of the environment variable that holds the password.
        #[arg(long)]
        password_env: Option<String>,
        /// File that holds the password (a trailing newline is not part of it).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// SCRAM-SHA-512 or SCRAM-SHA-256 (repeatable; default: both).
        #[arg(long = "mechanism", short = 'm')]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations, 4096..=16384 (default 4096).
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// Delete a user's credentials (default: of both mechanisms).
    Delete {
        name: String,
        /// SCRAM-SHA-512 or SCRAM-SHA-256 (repeatable; default: both).
        #[arg(long = "mechanism", short = 'm')]
        mechanisms: Vec<String>,
    },
}

pub(crate) async fn users(conn: &Conn, command: UsersCommand) -> anyhow::Result<()> {
    let api = connect(conn)?;
    match command {
        UsersCommand::List => {
            let answer = api.get("/v1/users").await?;
            show(conn, &answer, |l: UserList| {
                let mut t = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
                for u in l.users {
                    for c in u.credentials {
                        t.row(vec![u.name.clone(), c.mechanism, c.iterations.to_string()]);
                    }
                }
                t.render()
            })
        }
        UsersCommand::Set {
            name,
            password_env,
            password_file,
            mechanisms,
            iterations,
        } => {
            let password = read_password(password_env.as_deref(), password_file.as_ref())?;
            let body = json!({"password": password, "iterations": iterations});
            for mechanism in chosen(&mechanisms) {
                let answer = api.put(&credential_path(&name, mechanism), &body).await?;
                let info: CredentialInfo = answer.parse()?;
                match conn.output {
                    Output::Json => println!("{}", json!({"user": name, "credential": info})),
                    Output::Table => println!(
                        "set {} credential of user {name} ({} iterations)",
                        info.mechanism, info.iterations
                    ),
                }
            }
            Ok(())
        }
        UsersCommand::Delete { name, mechanisms } => delete(conn, &api, &name, &mechanisms).await,
    }
}

/// Deletes the chosen credentials; with the default (both), a mechanism the user has no
/// credential for is skipped, as long as one was deleted.
async fn delete(
    conn: &Conn,
    api: &AdminClient,
    name: &str,
    mechanisms: &[String],
) -> anyhow::Result<()> {
    let mut deleted = Vec::new();
    let mut last_error = None;
    for mechanism in chosen(mechanisms) {
        match api.delete(&credential_path(name, mechanism)).await {
            Ok(_) => deleted.push(mechanism.to_string()),
            Err(e) if mechanisms.is_empty() => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    if deleted.is_empty() {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nothing deleted")));
    }
    match conn.output {
        Output::Json => println!("{}", json!({"user": name, "deleted": deleted})),
        Output::Table => println!(
            "deleted {} credential(s) of user {name}",
            deleted.join(", ")
        ),
    }
    Ok(())
}

fn chosen(mechanisms: &[String]) -> Vec<&str> {
    if mechanisms.is_empty() {
        MECHANISMS.to_vec()
    } else {
        mechanisms.iter().map(String::as_str).collect()
    }
}

fn credential_path(user: &str, mechanism: &str) -> String {
    format!(
        "/v1/users/{}/credentials/{}",
        segment(user),
        segment(mechanism)
    )
}

/// The password from the named environment variable or the file.
fn read_password(env: Option<&str>, file: Option<&PathBuf>) -> anyhow::Result<String> {
    let password = match (env, file) {
        (Some(var), _) => std::env::var(var)
            .with_context(|| format!("--password-env: environment variable {var} is not set"))?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --password-file {}", path.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        }
        (None, None) => anyhow::bail!("give --password-env or --password-file"),
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_loses_its_trailing_newline_only() {
        let dir = std::env::temp_dir().join(format!("kafscale-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, " s3cret \r\n").unwrap();
        assert_eq!(read_password(None, Some(&file)).unwrap(), " s3cret ");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_password(None, Some(&file)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_password(Some("KAFSCALE_TEST_UNSET_PASSWORD_VARIABLE"), None).is_err());
    }

    #[test]
    fn paths_escape_user_names() {
        assert_eq!(
            credential_path("a/b", "SCRAM-SHA-512"),
            "/v1/users/a%2Fb/credentials/SCRAM-SHA-512"
        );
        assert_eq!(chosen(&[]), MECHANISMS);
    }
}
