//! The per-call limits a guest runs under, besides the engine's (deadline, fuel): its
//! linear memory and tables, enforced by a `ResourceLimiter` that also remembers a refused
//! growth, so the caller is told "out of memory" rather than a bare trap.

use wasmtime::ResourceLimiter;

/// Tables may hold at most this many elements (function references; no guest needs more).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The memory cap of one call, and whether the guest hit it.
pub struct CallLimits {
    /// Most bytes of linear memory the guest may have (its manifest's `resource_limits.memory`).
    pub memory_bytes: usize,
    /// Set when a growth (or the initial memory) was refused: the call's error is then a
    /// memory error whatever trap follows.
    pub refused: Option<String>,
}

impl CallLimits {
    pub fn new(memory_bytes: usize) -> Self {
        CallLimits { memory_bytes, refused: None }
    }
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let msg = format!(
                "the guest asked for {} KiB of linear memory (it had {} KiB); its limit is {} KiB (the manifest's resource_limits.memory)",
                desired >> 10,
                current >> 10,
                self.memory_bytes >> 10
            );
            self.refused = Some(msg.clone());
            // An error, not `Ok(false)`: a guest that ignores a failed `memory.grow` would
            // otherwise run on; the call stops here.
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let msg = format!("the guest asked for a table of {desired} elements; the limit is {MAX_TABLE_ELEMENTS}");
            self.refused = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }
}
