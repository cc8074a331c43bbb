//! InitProducerId: producer ids are handed out from blocks reserved in the metadata store, so
//! any number of gateways can allocate without coordinating per request.

use std::sync::Arc;

use kafscale_shared::catalog::{Catalog, CatalogError};
use tokio::sync::Mutex;

const BLOCK: i64 = 1000;

/// Allocates unique producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    catalog: Arc<Catalog>,
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        ProducerIds {
            catalog,
            block: Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before.
    pub async fn next(&self) -> Result<i64, CatalogError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let first = self.catalog.allocate_producer_ids(BLOCK).await?;
            *block = (first, first + BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
