//! Published prices (AWS, us-east-1, checked 2026-12; docs/cost.md has the sources).
//!
//! AWS bills data per "GB" that is 2^30 bytes, so every figure here is per GiB. Prices change
//! and differ by region: these are the defaults of `kafscale cost`, not facts about a bill.

use serde::Serialize;

/// What an object store charges.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ObjectStorePrices {
    pub name: &'static str,
    /// Per 1,000 PUT, COPY, POST or LIST requests.
    pub put_class_per_1000: f64,
    /// Per 1,000 GET, HEAD and other requests.
    pub get_class_per_1000: f64,
    /// Per GiB of data sent in the part of each request above 512 KiB (S3 Express One Zone).
    pub upload_per_gib: f64,
    /// Per GiB of data read in the part of each request above 512 KiB (S3 Express One Zone).
    pub retrieval_per_gib: f64,
    /// Per GiB stored for a month (reported apart: it depends on retention, not on requests).
    pub storage_per_gib_month: f64,
}

/// S3 Standard: PUTs $0.005 and GETs $0.0004 per 1,000; storage $0.023 per GiB-month.
pub const S3_STANDARD: ObjectStorePrices = ObjectStorePrices {
    name: "S3 Standard",
    put_class_per_1000: 0.005,
    get_class_per_1000: 0.0004,
    upload_per_gib: 0.0,
    retrieval_per_gib: 0.0,
    storage_per_gib_month: 0.023,
};

/// S3 Express One Zone (directory buckets): cheaper requests, dearer storage, and a per-GiB
/// charge for the bytes of each request above 512 KiB.
pub const S3_EXPRESS_ONE_ZONE: ObjectStorePrices = ObjectStorePrices {
    name: "S3 Express One Zone",
    put_class_per_1000: 0.00113,
    get_class_per_1000: 0.00003,
    upload_per_gib: 0.0032,
    retrieval_per_gib: 0.0006,
    storage_per_gib_month: 0.11,
};

/// The size above which S3 Express One Zone charges for a request's bytes.
pub const EXPRESS_FREE_BYTES_PER_REQUEST: f64 = 512.0 * 1024.0;

/// What the metadata store charges per capacity unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetaStorePrices {
    pub name: &'static str,
    pub per_million_write_units: f64,
    pub per_million_read_units: f64,
}

/// DynamoDB on-demand: $0.625 per million write request units, $0.125 per million read.
pub const DYNAMODB_ON_DEMAND: MetaStorePrices = MetaStorePrices {
    name: "DynamoDB on-demand",
    per_million_write_units: 0.625,
    per_million_read_units: 0.125,
};

/// The utilization provisioned capacity is priced at: DynamoDB auto scaling's usual target.
pub const PROVISIONED_UTILIZATION: f64 = 0.7;

/// DynamoDB provisioned capacity ($0.00065 per WCU-hour, $0.00013 per RCU-hour), as a price
/// per million units used when the table runs at [`PROVISIONED_UTILIZATION`] of what it pays
/// for (a unit-hour serves 3,600 units).
pub const DYNAMODB_PROVISIONED: MetaStorePrices = MetaStorePrices {
    name: "DynamoDB provisioned (70% utilized)",
    per_million_write_units: 0.00065 * 1e6 / 3600.0 / PROVISIONED_UTILIZATION,
    per_million_read_units: 0.00013 * 1e6 / 3600.0 / PROVISIONED_UTILIZATION,
};

/// What one GiB crossing between availability zones costs on AWS ($0.01 out + $0.01 in).
pub const CROSS_ZONE_PER_GIB: f64 = 0.02;

/// Zone crossings per GiB produced to a Kafka cluster spread over three zones with three
/// replicas: two thirds of producers write to a leader in another zone, and the leader sends
/// every byte to two followers in the other zones. Consumers are assumed to fetch from a
/// replica in their own zone (KIP-392); each group that does not adds two thirds more.
pub const KAFKA_ZONE_CROSSINGS_PER_GIB: f64 = 2.0 / 3.0 + 2.0;

/// A three-replica Kafka's cross-zone network cost per GiB produced.
pub fn kafka_network_per_gib() -> f64 {
    KAFKA_ZONE_CROSSINGS_PER_GIB * CROSS_ZONE_PER_GIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioned_capacity_is_cheaper_per_unit_than_on_demand() {
        // $0.00065 per WCU-hour serves 3,600 writes: $0.18 per million at full use.
        let full_use = DYNAMODB_PROVISIONED.per_million_write_units * PROVISIONED_UTILIZATION;
        assert!((full_use - 0.1806).abs() < 1e-3, "{full_use}");
        let on_demand = DYNAMODB_ON_DEMAND.per_million_write_units;
        assert!(DYNAMODB_PROVISIONED.per_million_write_units < on_demand * 0.5);
    }

    #[test]
    fn kafka_pays_about_five_cents_per_gib_in_cross_zone_traffic() {
        assert!((kafka_network_per_gib() - 0.0533).abs() < 1e-3);
    }
}
