//! Warm pools: per template, sandboxes made before anyone asks, so that a create naming the
//! template is answered at once. The replenisher ([`crate::Daemon::replenish`]) keeps each pool
//! at its `minReady` within `serve.maxSandboxes`; a sandbox taken from a pool leaves it for good
//! (it is never handed out twice), and one that ended while it waited (its timeout) is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::sandboxes::Live;

#[derive(Default)]
struct Pool {
    min_ready: u32,
    ready: VecDeque<(Arc<Live>, String)>,
}

/// What the API says of a pool.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// The template.
    pub template: String,
    /// How many it keeps ready.
    pub min_ready: u32,
    /// How many are ready now.
    pub ready: usize,
}

/// Every template's pool.
#[derive(Default)]
pub struct Pools(Mutex<BTreeMap<String, Pool>>);

impl Pools {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Pool>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `min_ready` of `template` (0 stops replenishing; the ready ones stay until used).
    pub fn set(&self, template: &str, min_ready: u32) {
        self.lock()
            .entry(template.to_owned())
            .or_default()
            .min_ready = min_ready;
    }

    /// A ready sandbox of `template`, taken out of the pool, with its token.
    pub fn take(&self, template: &str) -> Option<(Arc<Live>, String)> {
        let mut pools = self.lock();
        let pool = pools.get_mut(template)?;
        while let Some((live, token)) = pool.ready.pop_front() {
            if live.is_running() {
                return Some((live, token));
            }
        }
        None
    }

    /// Adds a ready sandbox.
    pub fn put(&self, template: &str, live: Arc<Live>, token: String) {
        self.lock()
            .entry(template.to_owned())
            .or_default()
            .ready
            .push_back((live, token));
    }

    /// (template, how many it lacks), dropping the ended ones first.
    pub fn shortfalls(&self) -> Vec<(String, u32)> {
        let mut pools = self.lock();
        pools
            .iter_mut()
            .filter_map(|(name, p)| {
                p.ready.retain(|(l, _)| l.is_running());
                let have = u32::try_from(p.ready.len()).unwrap_or(u32::MAX);
                (have < p.min_ready).then(|| (name.clone(), p.min_ready - have))
            })
            .collect()
    }

    /// One pool's view.
    pub fn view(&self, template: &str) -> PoolView {
        let pools = self.lock();
        let p = pools.get(template);
        PoolView {
            template: template.to_owned(),
            min_ready: p.map_or(0, |p| p.min_ready),
            ready: p.map_or(0, |p| p.ready.len()),
        }
    }

    /// Every pool's view.
    pub fn views(&self) -> Vec<PoolView> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        names.iter().map(|n| self.view(n)).collect()
    }
}
