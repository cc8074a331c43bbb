//! Why a simulation could not be set up or checked.

use kafscale_indexer::IndexerError;
use kafscale_shared::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation settings: {0}")]
    Config(String),
    #[error("metadata store: {0}")]
    Catalog(#[from] CatalogError),
    #[error("indexer: {0}")]
    Indexer(#[from] IndexerError),
    #[error("building the record batch: {0}")]
    Batch(String),
}
