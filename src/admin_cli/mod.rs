//! `kafscale admin cluster|shards|topics|groups|segments|users`: the admin HTTP API from a
//! terminal.
//!
//! Every command is one or two requests to the API of a running process
//! (`KAFSCALE_ADMIN_URL`, default http://localhost:9093: standalone, or any gateway) and prints
//! either aligned tables for people (`--output table`, the default) or the API's JSON
//! unchanged for scripts (`--output json`). Mutations send `KAFSCALE_ADMIN_TOKEN` as a bearer
//! token. `groups reset-offsets` behaves like `kafka-consumer-groups --reset-offsets`: it shows
//! the plan unless `--execute` is given, and only an inactive group can be reset.

mod client;
mod table;
mod users;

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;

use crate::admin_api::cluster::{ClusterInfo, FiguresState, LeaseInfo, ShardInfo, ShardList};
use crate::admin_api::groups::{
    GroupDescription, GroupList, GroupOffsets, ResetResult, ResetStrategy,
};
use crate::admin_api::topics::{
    SegmentList, TopicConfigs, TopicDescription, TopicList, TopicSummary,
};
use client::{AdminClient, segment};
use table::{Table, opt};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

/// Where the API is and how to print (accepted anywhere after the command).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Conn {
    /// Base URL of the admin API: standalone's or any gateway's HTTP address.
    #[arg(
        long,
        env = "KAFSCALE_ADMIN_URL",
        default_value = "http://localhost:9093",
        global = true
    )]
    url: String,
    /// Bearer token for mutations (and for reads if the server requires it).
    #[arg(
        long,
        env = "KAFSCALE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// PEM bundle of the CA that signs the API's certificate, for an `https://` URL (the
    /// server's `--http-tls-cert`); only this CA is trusted.
    #[arg(long, env = "KAFSCALE_ADMIN_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// table (aligned columns, for people) or json (the API's answer, for scripts).
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClientCommand {
    /// Mode, version, live processes by role, shard and coordinator slot owners.
    Cluster(Conn),
    /// Indexer shards: owner, address, lease epoch, queue depth and commit latency.
    Shards(Conn),
    /// List, create, describe, delete topics; show their configs.
    Topics {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// List, describe, delete consumer groups; show their lag; reset their offsets.
    Groups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// SCRAM users for SASL: list them, set a password, delete.
    Users {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// A partition's offset-index entries: offsets, segment object and byte range.
    Segments {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        partition: i32,
        /// Start at the entry holding this offset.
        #[arg(long)]
        from_offset: Option<i64>,
        /// Most entries shown (default 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicsCommand {
    /// Every topic with its partitions, records and bytes.
    List,
    /// Create a topic.
    Create {
        name: String,
        /// Partition count (default: the server's --default-partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// A topic config, KEY=VALUE (repeatable).
        #[arg(long = "config", short = 'c', value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Per-partition log start offset, high watermark, bytes, index entries, last append.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
    /// A topic's configs as stored.
    Config { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GroupsCommand {
    /// Every group with committed offsets, and the groups the answering process coordinates.
    List,
    /// State, protocol, members, client ids, hosts and assignments.
    Describe { group: String },
    /// Committed offset, high watermark and lag per partition, with the total.
    Lag { group: String },
    /// Move an inactive group's committed offsets (a dry run unless --execute).
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["all_topics", "topic"])))]
    #[command(group(clap::ArgGroup::new("to").required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "to_timestamp"])))]
    ResetOffsets {
        /// The group (it must have no members).
        group: String,
        /// Every partition the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        /// TOPIC or TOPIC:P,P,... (repeatable).
        #[arg(long)]
        topic: Vec<String>,
        /// The log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// The high watermark (the end).
        #[arg(long)]
        to_latest: bool,
        /// An offset (clamped into the partition's range).
        #[arg(long)]
        to_offset: Option<i64>,
        /// The first offset at or after a time: YYYY-MM-DDTHH:MM:SS[.mmm][Z|±HH:MM] (UTC when
        /// no zone is given).
        #[arg(long, value_parser = parse_datetime)]
        to_datetime: Option<i64>,
        /// The same with a time in ms since the epoch.
        #[arg(long)]
        to_timestamp: Option<i64>,
        /// Apply the new offsets (without it: only show them).
        #[arg(long)]
        execute: bool,
    },
    /// Delete an inactive group and its committed offsets.
    Delete { group: String },
}

/// Runs one command. A failure is printed as one line (the API's code and message, no
/// backtrace) and exits with status 1.
pub(crate) async fn run(command: ClientCommand) -> anyhow::Result<()> {
    if let Err(e) = execute(command).await {
        eprintln!("kafscale admin: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn execute(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Cluster(conn) => cluster(&conn).await,
        ClientCommand::Shards(conn) => shards(&conn).await,
        ClientCommand::Topics { conn, command } => topics(&conn, command).await,
        ClientCommand::Groups { conn, command } => groups(&conn, command).await,
        ClientCommand::Users { conn, command } => users::users(&conn, command).await,
        ClientCommand::Segments {
            conn,
            topic,
            partition,
            from_offset,
            limit,
        } => segments(&conn, &topic, partition, from_offset, limit).await,
    }
}

fn connect(conn: &Conn) -> anyhow::Result<AdminClient> {
    let tls = conn
        .tls_ca
        .as_deref()
        .map(|ca| kafscale_tls::ClientTls::load(ca, None).context("--tls-ca"))
        .transpose()?;
    AdminClient::new(&conn.url, conn.token.clone(), tls)
}

/// Prints the JSON answer, or the table `render` makes of it.
fn show<T: serde::de::DeserializeOwned>(
    conn: &Conn,
    answer: &client::Answer,
    render: impl FnOnce(T) -> String,
) -> anyhow::Result<()> {
    match conn.output {
        Output::Json => println!("{}", answer.pretty()),
        Output::Table => println!("{}", render(answer.parse()?)),
    }
    Ok(())
}

async fn cluster(conn: &Conn) -> anyhow::Result<()> {
    let answer = connect(conn)?.get("/v1/cluster").await?;
    show(conn, &answer, |c: ClusterInfo| {
        let mut processes = Table::new(&["ROLE", "ID", "ADDRESS"]);
        for p in &c.processes {
            processes.row(vec![p.role.clone(), p.id.clone(), p.addr.clone()]);
        }
        let held_slots: Vec<LeaseInfo> =
            c.coordinator_slots.into_iter().filter(|s| s.live).collect();
        format!(
            "mode: {}  version: {}  shards: {}\n\n{}\n\n{}\n\n{}",
            c.mode,
            c.version,
            c.shard_count,
            processes.render(),
            lease_table("SHARD", &c.shards).render(),
            lease_table("SLOT", &held_slots).render(),
        )
    })
}

async fn shards(conn: &Conn) -> anyhow::Result<()> {
    let answer = connect(conn)?.get("/v1/shards").await?;
    show(conn, &answer, |s: ShardList| {
        shard_table(&s.shards).render()
    })
}

/// Shards with their owner's figures; "unknown" where the owner did not answer.
fn shard_table(shards: &[ShardInfo]) -> Table {
    let mut t = Table::new(&[
        "SHARD",
        "OWNER",
        "ADDRESS",
        "EPOCH",
        "LIVE",
        "QUEUE",
        "COMMITS/1M",
        "P50-MS",
        "P99-MS",
    ]);
    let ms = |s: Option<f64>| opt(s.map(|s| format!("{:.1}", s * 1000.0)));
    for s in shards {
        let row_figures = match (&s.figures, &s.commit_latency) {
            (FiguresState::Ok, Some(l)) => vec![
                opt(s.queue_depth),
                l.commits.to_string(),
                ms(l.p50_seconds),
                ms(l.p99_seconds),
            ],
            _ => vec!["unknown".to_string(); 4],
        };
        let mut row = lease_row(&s.lease);
        row.extend(row_figures);
        t.row(row);
    }
    t
}

fn lease_table(what: &str, leases: &[LeaseInfo]) -> Table {
    let mut t = Table::new(&[what, "OWNER", "ADDRESS", "EPOCH", "LIVE"]);
    for l in leases {
        t.row(lease_row(l));
    }
    t
}

/// A lease's columns: index, owner, address, epoch, live.
fn lease_row(l: &LeaseInfo) -> Vec<String> {
    vec![
        l.index.to_string(),
        opt(l.owner.clone()),
        opt(l.owner_addr.clone()),
        opt(l.epoch),
        if l.live { "yes" } else { "no" }.to_string(),
    ]
}

async fn topics(conn: &Conn, command: TopicsCommand) -> anyhow::Result<()> {
    let api = connect(conn)?;
    match command {
        TopicsCommand::List => {
            let answer = api.get("/v1/topics").await?;
            show(conn, &answer, |l: TopicList| {
                let mut t = Table::new(&["TOPIC", "PARTITIONS", "RECORDS", "BYTES"]);
                for topic in l.topics {
                    t.row(vec![
                        topic.name,
                        topic.partitions.to_string(),
                        topic.records.to_string(),
                        topic.bytes.to_string(),
                    ]);
                }
                t.render()
            })
        }
        TopicsCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            let body = json!({"name": name, "partitions": partitions, "configs": configs});
            let answer = api.post("/v1/topics", &body).await?;
            show(conn, &answer, |t: TopicSummary| {
                format!(
                    "created topic {} ({} partitions, id {})",
                    t.name, t.partitions, t.topic_id
                )
            })
        }
        TopicsCommand::Describe { name } => {
            let answer = api.get(&format!("/v1/topics/{}", segment(&name))).await?;
            show(conn, &answer, describe_topic)
        }
        TopicsCommand::Delete { name } => {
            api.delete(&format!("/v1/topics/{}", segment(&name)))
                .await?;
            match conn.output {
                Output::Json => println!("{}", json!({"deleted": name})),
                Output::Table => println!("deleted topic {name}"),
            }
            Ok(())
        }
        TopicsCommand::Config { name } => {
            let answer = api
                .get(&format!("/v1/topics/{}/configs", segment(&name)))
                .await?;
            show(conn, &answer, |c: TopicConfigs| {
                let mut t = Table::new(&["CONFIG", "VALUE"]);
                for (k, v) in c.configs {
                    t.row(vec![k, v]);
                }
                if t.is_empty() {
                    format!("topic {} has no configs set (defaults apply)", c.topic)
                } else {
                    t.render()
                }
            })
        }
    }
}

fn describe_topic(d: TopicDescription) -> String {
    let mut t = Table::new(&[
        "PARTITION",
        "LOG-START",
        "HIGH-WATERMARK",
        "RECORDS",
        "BYTES",
        "INDEX-ENTRIES",
        "LAST-APPEND",
    ]);
    for p in d.partitions.iter() {
        t.row(vec![
            p.partition.to_string(),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
            p.records.to_string(),
            p.bytes.to_string(),
            p.index_entries.to_string(),
            opt(p.last_append_ms.map(format_ms)),
        ]);
    }
    let configs: Vec<String> = d.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "topic: {}  id: {}  partitions: {}  records: {}  bytes: {}\nconfigs: {}\n\n{}",
        d.name,
        d.topic_id,
        d.partitions.len(),
        d.records,
        d.bytes,
        if configs.is_empty() {
            "(none)".to_string()
        } else {
            configs.join(", ")
        },
        t.render()
    )
}

async fn groups(conn: &Conn, command: GroupsCommand) -> anyhow::Result<()> {
    let api = connect(conn)?;
    match command {
        GroupsCommand::List => {
            let answer = api.get("/v1/groups").await?;
            show(conn, &answer, |l: GroupList| {
                let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATED-HERE"]);
                for g in l.groups {
                    let here = if g.coordinated_here { "yes" } else { "no" };
                    t.row(vec![g.group_id, g.state, g.protocol_type, here.to_string()]);
                }
                t.render()
            })
        }
        GroupsCommand::Describe { group } => {
            let answer = api.get(&format!("/v1/groups/{}", segment(&group))).await?;
            show(conn, &answer, describe_group)
        }
        GroupsCommand::Lag { group } => {
            let answer = api
                .get(&format!("/v1/groups/{}/offsets", segment(&group)))
                .await?;
            show(conn, &answer, lag_table)
        }
        GroupsCommand::ResetOffsets {
            group,
            all_topics,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            to_timestamp,
            execute,
        } => {
            let (strategy, value) = if to_earliest {
                (ResetStrategy::Earliest, None)
            } else if to_latest {
                (ResetStrategy::Latest, None)
            } else if let Some(o) = to_offset {
                (ResetStrategy::Offset, Some(o))
            } else {
                (ResetStrategy::Timestamp, to_datetime.or(to_timestamp))
            };
            let topics = topic
                .iter()
                .map(|t| parse_topic_selection(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({
                "topics": (!all_topics).then_some(topics),
                "all_topics": all_topics,
                "strategy": strategy,
                "value": value,
                "dry_run": !execute,
            });
            let answer = api
                .post(
                    &format!("/v1/groups/{}/offsets/reset", segment(&group)),
                    &body,
                )
                .await?;
            show(conn, &answer, reset_table)
        }
        GroupsCommand::Delete { group } => {
            api.delete(&format!("/v1/groups/{}", segment(&group)))
                .await?;
            match conn.output {
                Output::Json => println!("{}", json!({"deleted": group})),
                Output::Table => println!("deleted group {group}"),
            }
            Ok(())
        }
    }
}

fn describe_group(d: GroupDescription) -> String {
    if !d.coordinated_here {
        return format!(
            "group {} is coordinated by {}: ask that process's admin API",
            d.group_id,
            d.coordinator.as_deref().unwrap_or("no live process yet")
        );
    }
    let mut t = Table::new(&["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
    let no_members = d.members.is_empty();
    for m in d.members {
        let assignment: Vec<String> = m
            .assignment
            .iter()
            .map(|a| {
                let ps: Vec<String> = a.partitions.iter().map(|p| p.to_string()).collect();
                format!("{}:{}", a.topic, ps.join(","))
            })
            .collect();
        t.row(vec![
            m.member_id,
            m.client_id,
            m.client_host,
            assignment.join(" "),
        ]);
    }
    let nonempty = |s: Option<String>| opt(s.filter(|s| !s.is_empty()));
    format!(
        "group: {}  state: {}  protocol-type: {}  assignor: {}  generation: {}  coordinator: {}\n\n{}",
        d.group_id,
        opt(d.state),
        nonempty(d.protocol_type),
        nonempty(d.protocol),
        opt(d.generation),
        opt(d.coordinator),
        if no_members {
            "(no members)".to_string()
        } else {
            t.render()
        }
    )
}

fn lag_table(o: GroupOffsets) -> String {
    let mut t = Table::new(&[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    for p in o.partitions {
        t.row(vec![
            o.group_id.clone(),
            p.topic,
            p.partition.to_string(),
            p.committed_offset.to_string(),
            p.high_watermark.to_string(),
            p.lag.to_string(),
            opt(p.member_id),
            opt(p.client_host),
            opt(p.client_id),
        ]);
    }
    t.row(vec![
        "TOTAL".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        o.total_lag.to_string(),
    ]);
    t.render()
}

fn reset_table(r: ResetResult) -> String {
    let mut t = Table::new(&[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "PREVIOUS-OFFSET",
        "NEW-OFFSET",
    ]);
    for p in r.partitions {
        t.row(vec![
            r.group_id.clone(),
            p.topic,
            p.partition.to_string(),
            opt(p.previous_offset),
            p.new_offset.to_string(),
        ]);
    }
    let note = if r.dry_run {
        "\n\n(dry run: nothing changed; add --execute to apply)"
    } else {
        ""
    };
    format!("{}{note}", t.render())
}

async fn segments(
    conn: &Conn,
    topic: &str,
    partition: i32,
    from_offset: Option<i64>,
    limit: Option<u32>,
) -> anyhow::Result<()> {
    let mut path = format!(
        "/v1/topics/{}/partitions/{partition}/segments",
        segment(topic)
    );
    let mut query = Vec::new();
    if let Some(f) = from_offset {
        query.push(format!("from_offset={f}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let answer = connect(conn)?.get(&path).await?;
    show(conn, &answer, |l: SegmentList| {
        let mut t = Table::new(&[
            "BASE-OFFSET",
            "LAST-OFFSET",
            "RECORDS",
            "BATCHES",
            "SEGMENT",
            "BYTE-START",
            "BYTE-LEN",
        ]);
        for e in l.entries {
            t.row(vec![
                e.base_offset.to_string(),
                e.last_offset.to_string(),
                e.record_count.to_string(),
                e.batch_count.to_string(),
                e.segment_key,
                e.byte_start.to_string(),
                e.byte_len.to_string(),
            ]);
        }
        t.render()
    })
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// `topic` or `topic:0,1,2` as the API's topic selection.
fn parse_topic_selection(s: &str) -> anyhow::Result<serde_json::Value> {
    match s.rsplit_once(':') {
        Some((topic, list)) if !list.is_empty() => {
            let partitions = list
                .split(',')
                .map(|p| p.trim().parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--topic {s:?}: partitions must be numbers"))?;
            Ok(json!({"topic": topic, "partitions": partitions}))
        }
        _ => Ok(json!({"topic": s.trim_end_matches(':')})),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` as ms since the epoch (UTC without a zone).
fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM]");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>());
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|&i| i >= 8) {
        let (c, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (c, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>());
    let (Some(Ok(h)), Some(Ok(mi)), Some(Ok(sec))) = (t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    let millis: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + millis)
}

/// ms since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_ms(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{:02}.{:03}Z",
        rest / 1000,
        rest % 1000
    )
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_like_kafka_tools() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20.123Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_datetime("2023-11-15T00:13:20+02:00"),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14T21:13:20.5-01:00"),
            Ok(1_700_000_000_500)
        );
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2023-13-01T00:00:00").is_err());
        assert!(parse_datetime("2023-01-01Tnoon").is_err());
        for ms in [0, 1_700_000_000_123, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_datetime(&format_ms(ms)), Ok(ms), "{}", format_ms(ms));
        }
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn topic_selections_and_configs_parse() {
        assert_eq!(
            parse_topic_selection("demo:0,2").expect("ok"),
            json!({"topic": "demo", "partitions": [0, 2]})
        );
        assert_eq!(
            parse_topic_selection("demo").expect("ok"),
            json!({"topic": "demo"})
        );
        assert!(parse_topic_selection("demo:x").is_err());
        assert_eq!(
            parse_config("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert!(parse_config("=1").is_err());
    }
}
