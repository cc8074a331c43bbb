//! `kafscale cost`: what a cluster's traffic costs per GiB produced, from its own counters.
//!
//! Every process counts the requests it sends to the object store and the DynamoDB capacity
//! units of its metadata requests. This command scrapes the `/metrics` page of each process
//! given (every pod of every tier, for a cluster), sums the counters, and prices them with
//! `kafscale-cost`. Counters run from each process's start; to price one run, save a baseline
//! before it (`--save FILE`) and price what grew since (`--since FILE`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kafscale_cost::prices::{
    DYNAMODB_ON_DEMAND, DYNAMODB_PROVISIONED, MetaStorePrices, ObjectStorePrices,
    S3_EXPRESS_ONE_ZONE, S3_STANDARD,
};
use kafscale_cost::{Estimate, Usage, exposition};
use kafscale_shared::http_client::HttpClient;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub(crate) struct CostArgs {
    /// A process's metrics page (http://host:port/metrics); repeat it for every process of a
    /// cluster, each tier's pods included.
    #[arg(long = "metrics", default_value = "http://127.0.0.1:9093/metrics")]
    metrics: Vec<String>,
    /// Price only what grew since this baseline (a file written by --save).
    #[arg(long)]
    since: Option<PathBuf>,
    /// Write the counters read now to this file, as the baseline of a later --since; with no
    /// --since, nothing is priced.
    #[arg(long)]
    save: Option<PathBuf>,
    /// The object store's prices.
    #[arg(long, value_enum, default_value_t = ObjectStorePricing::S3Standard)]
    object_store: ObjectStorePricing,
    /// The metadata store's prices.
    #[arg(long, value_enum, default_value_t = MetaStorePricing::OnDemand)]
    meta_store: MetaStorePricing,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ObjectStorePricing {
    S3Standard,
    S3Express,
}

impl ObjectStorePricing {
    fn prices(self) -> &'static ObjectStorePrices {
        match self {
            ObjectStorePricing::S3Standard => &S3_STANDARD,
            ObjectStorePricing::S3Express => &S3_EXPRESS_ONE_ZONE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MetaStorePricing {
    OnDemand,
    Provisioned,
}

impl MetaStorePricing {
    fn prices(self) -> &'static MetaStorePrices {
        match self {
            MetaStorePricing::OnDemand => &DYNAMODB_ON_DEMAND,
            MetaStorePricing::Provisioned => &DYNAMODB_PROVISIONED,
        }
    }
}

pub(crate) async fn run(args: CostArgs) -> anyhow::Result<()> {
    let now = scrape_all(&args.metrics).await?;
    if let Some(path) = &args.save {
        let json = serde_json::to_vec_pretty(&now)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        if args.since.is_none() {
            eprintln!("baseline saved to {}", path.display());
            return Ok(());
        }
    }
    let window = match &args.since {
        Some(path) => now.since(&read_baseline(path)?)?,
        None => now,
    };
    let estimate = Estimate::new(
        &window,
        args.object_store.prices(),
        args.meta_store.prices(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&estimate)?);
    } else {
        println!("{estimate}");
    }
    Ok(())
}

fn read_baseline(path: &PathBuf) -> anyhow::Result<Usage> {
    let text =
        std::fs::read(path).with_context(|| format!("reading the baseline {}", path.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a baseline written by --save", path.display()))
}

/// The counters of every page, summed.
async fn scrape_all(urls: &[String]) -> anyhow::Result<Usage> {
    let client = HttpClient::new(Duration::from_secs(2));
    let mut total = Usage::default();
    for url in urls {
        let answer = client
            .get(url, SCRAPE_TIMEOUT)
            .await
            .with_context(|| format!("scraping {url}"))?;
        if !answer.status().is_success() {
            anyhow::bail!("scraping {url}: HTTP {}", answer.status());
        }
        let text = std::str::from_utf8(answer.body())
            .with_context(|| format!("{url} did not answer text"))?;
        let samples = exposition::parse(text).with_context(|| format!("reading {url}"))?;
        total.add(&Usage::from_samples(&samples));
    }
    Ok(total)
}
