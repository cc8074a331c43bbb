//! ApiVersions: built from the handler's support table.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::ApiSupport;

/// The ApiVersions versions the core serves (real clients open with v0, v2, v3 and v4).
pub(crate) const API_VERSIONS_SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ApiVersions, 0, 4);

/// Builds an ApiVersions response listing `apis` plus ApiVersions itself.
pub fn api_versions_response(
    apis: &[ApiSupport],
    error: Option<ResponseError>,
) -> ApiVersionsResponse {
    let mut list: Vec<ApiSupport> = apis.to_vec();
    list.push(API_VERSIONS_SUPPORT);
    list.sort_by_key(|a| a.key as i16);
    list.dedup_by_key(|a| a.key as i16);
    let mut response = ApiVersionsResponse::default();
    response.error_code = error.map(|e| e.code()).unwrap_or(0);
    response.api_keys = list
        .iter()
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min_version;
            v.max_version = a.max_version;
            v
        })
        .collect();
    response
}
