//! The wasmtime engine of the daemon: Cranelift, the pooling allocator sized by
//! `wasm.max_concurrent`, fuel metering and epoch interruption, and the one thread that
//! advances the epoch (the clock every call's deadline is counted in).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config as WtConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::WasmConfig;

/// How often the epoch advances: the granularity of a call's deadline.
pub const TICK: Duration = Duration::from_millis(5);

/// Bytes of a slot's memory (and table) kept mapped between calls and reset in place.
const KEEP_RESIDENT: usize = 1 << 20;

/// Makes the engine. Fails only if the host cannot run wasmtime (no virtual memory for the
/// pool, an unsupported CPU).
pub fn engine(cfg: &WasmConfig) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    // One instance, one memory and one table per call in flight; the semaphore keeps the
    // calls within `max_concurrent`, so the pool never runs out.
    pool.total_core_instances(cfg.max_concurrent)
        .total_memories(cfg.max_concurrent)
        .total_tables(cfg.max_concurrent)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(cfg.max_memory_bytes as usize)
        // A slot given back is reset by writing over the pages the call touched (found with
        // the PAGEMAP_SCAN ioctl where the kernel has it, Linux 6.7+) rather than with
        // `madvise(MADV_DONTNEED)`: that one flushes the TLB of every core running one of
        // the daemon's threads (an IPI each, costly in a VM) and makes the next call fault
        // the pages in again. Measured: two `madvise` per call and a sixth of the daemon's
        // CPU in TLB shoot-downs at 64 connections (BENCHMARKS.md, WebAssembly).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut c = WtConfig::new();
    c.strategy(wasmtime::Strategy::Cranelift)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .consume_fuel(true)
        .epoch_interruption(true);
    Engine::new(&c)
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
